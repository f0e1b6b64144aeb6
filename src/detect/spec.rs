//! Model specs (models/*.yaml): parsing and validation.
