//! A private PostgreSQL server on loopback for the journal's PostgreSQL
//! tests: `initdb` into a temporary directory, `postgres` on a free port,
//! stopped when dropped and — through the same reaper as the control plane —
//! when the owning process dies.
//!
//! PostgreSQL refuses to run as root; when we are root (CI containers), the
//! server runs as the `postgres` system user through `setpriv`, which execs,
//! so the pid we hold is the server's own.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use super::{Error, free_port, io, spawn_reaper, tail, terminate};

/// Environment variable naming the directory of `initdb` and `postgres`.
pub const PG_BIN_ENV: &str = "AUTOPILOT_PG_BIN";
/// Debian installs each major version under here; the newest is used.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";
const UNPRIVILEGED_USER: &str = "postgres";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running PostgreSQL server with a superuser `autopilot` (trust auth on
/// loopback only).
pub struct Postgres {
    work: PathBuf,
    child: Option<Child>,
    reaper: Option<(Child, ChildStdin)>,
    port: u16,
    /// The directory of the server binaries, to start it again.
    bin: PathBuf,
}

/// How [`Postgres::restart`] stops the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGINT, `pg_ctl restart -m fast`: open sessions are ended and their
    /// transactions rolled back; committed data is written out.
    Fast,
    /// SIGQUIT, `-m immediate`: every server process quits at once, as in a
    /// crash; the next start recovers from the write-ahead log. Only
    /// transactions committed with `synchronous_commit` on (the server's
    /// default is off here, to save time) are sure to survive it.
    Immediate,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Postgres {
    /// The directory holding the server binaries, or why there is none.
    pub fn binaries() -> Result<PathBuf, Error> {
        let dir = match std::env::var_os(PG_BIN_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => fs::read_dir(DEBIAN_PG_ROOT)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let major: u32 = e.file_name().to_str()?.parse().ok()?;
                    Some((major, e.path().join("bin")))
                })
                .max()
                .map(|(_, bin)| bin)
                .unwrap_or_else(|| PathBuf::from(DEBIAN_PG_ROOT).join("15/bin")),
        };
        for binary in ["initdb", "postgres", "pg_isready"] {
            if !dir.join(binary).is_file() {
                return Err(Error::MissingBinary { dir, binary });
            }
        }
        Ok(dir)
    }

    /// Initialises a cluster and starts the server; returns once it accepts
    /// connections.
    pub fn start() -> Result<Self, Error> {
        let bin = Self::binaries()?;
        let work = tempfile::Builder::new()
            .prefix("autopilot-pg-")
            .tempdir()
            .map_err(io("creating the PostgreSQL work directory"))?
            .keep();
        let mut pg = Postgres {
            reaper: Some(spawn_reaper(&work)?),
            work,
            child: None,
            port: 0,
            bin: bin.clone(),
        };
        pg.boot(&bin)?;
        Ok(pg)
    }

    fn command(&self, binary: &Path) -> Command {
        if is_root() {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={UNPRIVILEGED_USER}"),
                &format!("--regid={UNPRIVILEGED_USER}"),
                "--init-groups",
                "--",
            ])
            .arg(binary);
            c
        } else {
            Command::new(binary)
        }
    }

    fn boot(&mut self, bin: &Path) -> Result<(), Error> {
        let started = Instant::now();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", &format!("{UNPRIVILEGED_USER}:{UNPRIVILEGED_USER}")])
                .arg(&self.work)
                .status()
                .map_err(io("chown of the PostgreSQL work directory"))?;
            if !status.success() {
                return Err(io(format!(
                    "chown to {UNPRIVILEGED_USER} (does the user exist? scripts/install-deps installs postgresql)"
                ))(
                    std::io::ErrorKind::PermissionDenied.into()
                ));
            }
        }
        let data = self.work.join("data");
        let log = self.work.join("postgres.log");
        let out = self
            .command(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "autopilot",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .output()
            .map_err(io("running initdb"))?;
        if !out.status.success() {
            let _ = fs::write(&log, &out.stderr);
            return Err(Error::ProcessExited {
                name: "initdb",
                status: out.status,
                tail: String::from_utf8_lossy(&out.stderr).into_owned(),
                log,
            });
        }
        self.port = free_port()?;
        self.serve(started)
    }

    /// Starts the server on the initialised data directory and port (its
    /// log appended to); returns once it accepts connections.
    fn serve(&mut self, started: Instant) -> Result<(), Error> {
        let bin = self.bin.clone();
        let data = self.work.join("data");
        let log = self.work.join("postgres.log");
        let logfile = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io("opening the PostgreSQL log"))?;
        let err = logfile
            .try_clone()
            .map_err(io("duplicating a log handle"))?;
        let child = self
            .command(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.work)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                // Test data is thrown away; durability only costs time.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=100",
            ])
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .stdout(logfile)
            .stderr(err)
            .spawn()
            .map_err(io("starting postgres"))?;
        if let Some((_, stdin)) = self.reaper.as_mut() {
            let _ = writeln!(stdin, "{}", child.id());
        }
        self.child = Some(child);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(Error::ProcessExited {
                    name: "postgres",
                    status,
                    tail: tail(&log, 30),
                    log,
                });
            }
            let ready = Command::new(bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "autopilot",
                    "-q",
                ])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                return Err(Error::NotReady {
                    name: "postgres",
                    waited: started.elapsed(),
                    last: "pg_isready failed".into(),
                    tail: tail(&log, 30),
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server `how` and starts it again on the same port and
    /// data; returns once it accepts connections. Clients' connections are
    /// cut and must reconnect.
    pub fn restart(&mut self, how: Shutdown) -> Result<(), Error> {
        self.shut_down(how);
        self.start_again()
    }

    /// Stops the server `how`, keeping its data and port for
    /// [`Self::start_again`]: until then connections are refused.
    pub fn shut_down(&mut self, how: Shutdown) {
        if let Some(mut child) = self.child.take() {
            let signal = match how {
                Shutdown::Fast => "-INT",
                Shutdown::Immediate => "-QUIT",
            };
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) {
                if Instant::now() > deadline {
                    // Its children may still hold the shared memory; a
                    // start would fail and say so.
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Starts the server again after [`Self::shut_down`] (a running one is
    /// left alone); returns once it accepts connections.
    pub fn start_again(&mut self) -> Result<(), Error> {
        if let Some(c) = self.child.as_mut()
            && let Ok(None) = c.try_wait()
        {
            return Ok(());
        }
        self.serve(Instant::now())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `db` (which the caller creates) as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://autopilot@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops the server and removes its directory.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for
            // the test's pooled connections to go away.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            terminate(&mut child);
        }
        if let Some((mut reaper, stdin)) = self.reaper.take() {
            drop(stdin);
            let _ = reaper.wait();
        }
        let _ = fs::remove_dir_all(&self.work);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
