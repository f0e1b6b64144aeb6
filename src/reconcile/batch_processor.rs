//! BatchProcessor → CronJob, plus a one-off Job when the
//! `payments.io/run-now` annotation carries a value not acted on yet. Status
//! is computed from the CronJob and the Jobs it (and we) created.

use std::{sync::Arc, time::Instant};

use k8s_openapi::{
    api::batch::v1::{CronJob, Job},
    jiff::Timestamp,
};
use kube::{Resource, ResourceExt, api::ListParams, runtime::controller::Action};
use serde_json::{Value, json};

use super::{
    Context, Error, Invalid,
    conditions::{self, Desired as Cond},
    objects::{self, Identity},
    requeue,
    rollout::EventIntent,
    schedule,
};
use crate::{
    act::{self, Desired, OwnedObjects},
    crd::{
        BatchProcessor, BatchProcessorSpec, BatchProcessorStatus, Phase,
        batch_processor::RUN_NOW_ANNOTATION, condition, reason,
    },
};

pub const COMPONENT: &str = "batch-processor";

#[derive(Debug)]
pub struct Validated<'a>(&'a BatchProcessorSpec);

pub fn validate(spec: &BatchProcessorSpec) -> Result<Validated<'_>, Invalid> {
    objects::check_image(&spec.image, &spec.version)?;
    schedule::parse(&spec.schedule).map_err(|m| Invalid::new("spec.schedule", m))?;
    // The schedule becomes a CronJob's, and Kubernetes numbers weekdays 0-6
    // only: 7 (Sunday elsewhere in this program) would be refused at apply.
    let weekdays = spec.schedule.split_whitespace().nth(4).unwrap_or("*");
    if weekdays.split([',', '-', '/']).any(|t| t.trim() == "7") {
        return Err(Invalid::new(
            "spec.schedule",
            format!(
                "{:?}: a CronJob numbers weekdays 0-6; write Sunday as 0",
                spec.schedule
            ),
        ));
    }
    if let Some(tz) = &spec.time_zone {
        schedule::time_zone(tz).map_err(|m| Invalid::new("spec.timeZone", m))?;
    }
    Ok(Validated(spec))
}

fn job_template(id: &Identity, spec: &BatchProcessorSpec) -> Value {
    let mut container = json!({
        "name": "batch",
        "image": objects::image_ref(&spec.image, &spec.version, &spec.version),
        "args": spec.args,
        "securityContext": {"allowPrivilegeEscalation": false, "runAsNonRoot": true},
    });
    if let Some(r) = &spec.resources {
        container["resources"] = json!(r);
    }
    let mut labels = id.labels(&spec.version);
    labels.remove("app.kubernetes.io/managed-by");
    json!({
        "metadata": {"labels": labels},
        "spec": {
            "parallelism": spec.parallelism,
            "completions": spec.completions,
            "backoffLimit": spec.backoff_limit,
            "activeDeadlineSeconds": spec.active_deadline_seconds,
            "template": {
                "metadata": {"labels": labels},
                "spec": {"restartPolicy": "Never", "containers": [container]},
            },
        },
    })
}

/// Name of the one-off Job for a run-now value: deterministic, so applying
/// it twice creates one Job.
pub fn run_now_job_name(owner: &str, value: &str) -> String {
    let hash = objects::config_hash(&[(String::new(), value.to_string())].into_iter().collect());
    format!(
        "{}-manual-{}",
        owner.chars().take(40).collect::<String>(),
        &hash[..8]
    )
}

/// The CronJob, and a one-off Job when `run_now` is a value not acted on yet.
pub fn plan(
    id: &Identity,
    v: &Validated<'_>,
    run_now: Option<&str>,
) -> Result<OwnedObjects, objects::Error> {
    let spec = v.0;
    let mut cron_spec = json!({
        "schedule": spec.schedule,
        "concurrencyPolicy": spec.concurrency_policy,
        "suspend": spec.suspend,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 5,
        "jobTemplate": job_template(id, spec),
    });
    if let Some(tz) = &spec.time_zone {
        cron_spec["timeZone"] = json!(tz);
    }
    if let Some(d) = spec.starting_deadline_seconds {
        cron_spec["startingDeadlineSeconds"] = json!(d);
    }
    let cron_job: CronJob = objects::typed(
        "CronJob",
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": id.metadata(&spec.version), "spec": cron_spec}),
    )?;
    let job = match run_now {
        Some(value) => {
            let mut t = job_template(id, spec);
            let mut meta = id.metadata(&spec.version);
            meta["name"] = json!(run_now_job_name(&id.name, value));
            meta["annotations"] = json!({RUN_NOW_ANNOTATION: value});
            t["metadata"] = meta;
            t["apiVersion"] = json!("batch/v1");
            t["kind"] = json!("Job");
            Desired::Apply(objects::typed::<Job>("Job", t)?)
        }
        None => Desired::Unmanaged,
    };
    Ok(OwnedObjects {
        cron_job: Desired::Apply(cron_job),
        job,
        config_map: Desired::Unmanaged,
        deployment: Desired::Unmanaged,
        service: Desired::Unmanaged,
        hpa: Desired::Unmanaged,
        network_policy: Desired::Unmanaged,
        service_monitor: Desired::Unmanaged,
    })
}

/// What status needs of one Job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSummary {
    pub started: Option<Timestamp>,
    pub succeeded_at: Option<Timestamp>,
    pub failed_at: Option<Timestamp>,
    pub active: bool,
}

impl JobSummary {
    pub fn from_job(job: &Job) -> Self {
        let status = job.status.clone().unwrap_or_default();
        let condition_time = |type_: &str| {
            status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == type_ && c.status == "True")
                .map(|c| {
                    c.last_transition_time
                        .as_ref()
                        .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
                })
        };
        let succeeded_at =
            condition_time("Complete").map(|t| status.completion_time.as_ref().map_or(t, |c| c.0));
        let failed_at = condition_time("Failed");
        JobSummary {
            started: status.start_time.map(|t| t.0),
            active: succeeded_at.is_none() && failed_at.is_none(),
            succeeded_at,
            failed_at,
        }
    }
}

/// Status from the CronJob and the Jobs: last schedule, last success, last
/// failure and failures since the last success.
pub fn compute_status(
    previous: &BatchProcessorStatus,
    spec: &BatchProcessorSpec,
    cron_job: Option<&CronJob>,
    jobs: &[JobSummary],
    run_now: Option<&str>,
    generation: Option<i64>,
    now: Timestamp,
) -> (BatchProcessorStatus, Vec<EventIntent>) {
    let mut s = previous.clone();
    s.observed_generation = generation;
    s.current_version = Some(spec.version.clone());
    s.last_schedule_time = cron_job
        .and_then(|c| c.status.as_ref())
        .and_then(|st| st.last_schedule_time.clone())
        .or(s.last_schedule_time);
    let last_success = jobs.iter().filter_map(|j| j.succeeded_at).max();
    let last_failure = jobs.iter().filter_map(|j| j.failed_at).max();
    s.last_successful_time = last_success
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
        .or(s.last_successful_time);
    s.last_failure_time = last_failure
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
        .or(s.last_failure_time);
    let success_mark = s.last_successful_time.as_ref().map(|t| t.0);
    s.consecutive_failures = jobs
        .iter()
        .filter_map(|j| j.failed_at)
        .filter(|f| success_mark.is_none_or(|ok| *f > ok))
        .count() as i32;
    s.active_jobs = jobs.iter().filter(|j| j.active).count() as i32;
    if let Some(v) = run_now {
        s.last_run_now = Some(v.to_string());
    }

    let degraded = s.consecutive_failures > 0;
    for desired in run_conditions(spec, &s) {
        conditions::set(&mut s.conditions, desired, generation, now);
    }
    s.phase = if degraded {
        Phase::Degraded
    } else {
        Phase::Ready
    };
    let events = run_events(previous, &s, run_now);
    (s, events)
}

/// Ready (scheduled or suspended), Progressing (a run active), Degraded
/// (consecutive failed runs).
fn run_conditions(spec: &BatchProcessorSpec, s: &BatchProcessorStatus) -> [Cond<'static>; 3] {
    let degraded = s.consecutive_failures > 0;
    let (ready_reason, ready_msg) = if spec.suspend {
        (
            reason::SUSPENDED,
            "schedule suspended; no new runs start".to_string(),
        )
    } else {
        (reason::SCHEDULED, format!("runs on {:?}", spec.schedule))
    };
    [
        Cond {
            type_: condition::READY,
            status: !degraded,
            reason: ready_reason,
            message: ready_msg,
        },
        Cond {
            type_: condition::PROGRESSING,
            status: s.active_jobs > 0,
            reason: if s.active_jobs > 0 {
                reason::JOB_RUNNING
            } else {
                reason::IDLE
            },
            message: format!("{} run(s) in progress", s.active_jobs),
        },
        Cond {
            type_: condition::DEGRADED,
            status: degraded,
            reason: if degraded {
                reason::RUN_FAILED
            } else {
                reason::HEALTHY
            },
            message: if degraded {
                format!("{} consecutive failed run(s)", s.consecutive_failures)
            } else {
                String::new()
            },
        },
    ]
}

/// The Events of a status change: phase, a new failure, a run-now.
fn run_events(
    previous: &BatchProcessorStatus,
    s: &BatchProcessorStatus,
    run_now: Option<&str>,
) -> Vec<EventIntent> {
    let mut events = Vec::new();
    if s.phase != previous.phase {
        events.push(EventIntent {
            warning: s.phase == Phase::Degraded,
            reason: reason::PHASE_CHANGED,
            note: format!("{:?} -> {:?}", previous.phase, s.phase),
        });
    }
    if s.last_failure_time != previous.last_failure_time && s.last_failure_time.is_some() {
        events.push(EventIntent {
            warning: true,
            reason: reason::RUN_FAILED,
            note: format!(
                "a run failed; {} consecutive failure(s)",
                s.consecutive_failures
            ),
        });
    }
    if let Some(v) = run_now {
        events.push(EventIntent {
            warning: false,
            reason: reason::RUN_TRIGGERED,
            note: format!("one-off run started for {RUN_NOW_ANNOTATION}={v}"),
        });
    }
    events
}

pub async fn reconcile(obj: Arc<BatchProcessor>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&obj, &ctx).await;
    ctx.metrics
        .duration
        .with_label_values(&["BatchProcessor"])
        .observe(started.elapsed().as_secs_f64());
    let label = if result.is_ok() {
        ctx.backoff.succeeded(&super::backoff::key_of(obj.as_ref()));
        "ok"
    } else {
        // Counted (and the delay chosen) in `error_policy`.
        "error"
    };
    ctx.metrics
        .reconciles
        .with_label_values(&["BatchProcessor", label])
        .inc();
    result
}

#[tracing::instrument(skip_all, fields(kind = "BatchProcessor", namespace = obj.namespace().unwrap_or_default(), name = obj.name_any()))]
async fn reconcile_inner(obj: &BatchProcessor, ctx: &Context) -> Result<Action, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let now = Timestamp::now();
    let previous = obj.status.clone().unwrap_or_default();
    let generation = obj.meta().generation;

    let v = match validate(&obj.spec) {
        Ok(v) => v,
        Err(invalid) => {
            let mut s = previous.clone();
            s.phase = Phase::Failed;
            s.observed_generation = generation;
            conditions::set_invalid(&mut s.conditions, &invalid, generation, now);
            if !super::workload::same_status(&json!(previous), &json!(s)) {
                act::apply_status(&ctx.client, obj, json!(s)).await?;
                act::publish_event(
                    &ctx.recorder,
                    obj,
                    true,
                    reason::INVALID_SPEC,
                    invalid.to_string(),
                )
                .await;
            }
            return Ok(Action::await_change());
        }
    };
    let id = Identity {
        component: COMPONENT,
        name: name.clone(),
        namespace: namespace.clone(),
        owner: obj
            .controller_owner_ref(&())
            .ok_or(objects::Error::MissingOwnerUid)?,
    };
    let run_now = obj
        .annotations()
        .get(RUN_NOW_ANNOTATION)
        .filter(|v| !v.is_empty() && previous.last_run_now.as_deref() != Some(v.as_str()))
        .cloned();
    let applied = act::apply_owned(
        &ctx.client,
        &namespace,
        &name,
        &id.owner.uid,
        plan(&id, &v, run_now.as_deref())?,
    )
    .await?;
    ctx.metrics
        .writes
        .with_label_values(&["BatchProcessor"])
        .inc_by(applied.writes as u64);

    let selector = format!("app.kubernetes.io/name={COMPONENT},app.kubernetes.io/instance={name}");
    let jobs = ctx
        .api::<Job>(&namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::Fetch {
            what: "the Jobs of the batch processor",
            source,
        })?;
    let summaries: Vec<_> = jobs.items.iter().map(JobSummary::from_job).collect();
    // A run-now Job whose name is someone else's did not run: it is not
    // marked as acted on, so it runs once the name is free.
    let run_now = run_now.filter(|_| applied.job.is_some());
    let (mut status, mut events) = compute_status(
        &previous,
        &obj.spec,
        applied.cron_job.as_ref(),
        &summaries,
        run_now.as_deref(),
        generation,
        now,
    );
    let stalled = applied.cron_job.is_none();
    if let Some(e) = conditions::set_conflicts(
        &mut status.conditions,
        &previous.conditions,
        &applied.conflicts,
        &applied.held,
        stalled,
        generation,
        now,
    ) {
        events.push(e);
    }
    if !applied.conflicts.is_empty() {
        status.phase = if stalled {
            Phase::Failed
        } else {
            Phase::Degraded
        };
    }
    if !super::workload::same_status(&json!(previous), &json!(status)) {
        act::apply_status(&ctx.client, obj, json!(status)).await?;
    }
    for e in events {
        act::publish_event(&ctx.recorder, obj, e.warning, e.reason, e.note).await;
    }
    // A foreign object wakes no watch of ours when it goes: look again soon.
    Ok(requeue(
        ctx,
        status.active_jobs > 0 || !applied.conflicts.is_empty(),
    ))
}

pub fn error_policy(obj: Arc<BatchProcessor>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .failures
        .with_label_values(&["BatchProcessor", error.kind()])
        .inc();
    let delay = ctx.backoff.failed(&super::backoff::key_of(obj.as_ref()));
    tracing::warn!(namespace = obj.namespace().unwrap_or_default(), name = obj.name_any(), error = %error, retry_in = ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weekday_of_seven_is_refused_for_a_cronjob() {
        let mut spec: BatchProcessorSpec =
            serde_yaml::from_str("{version: 1.0.0, image: ghcr.io/x/batch, schedule: '0 2 * * 7'}")
                .expect("spec");
        let e = validate(&spec).expect_err("7 refused");
        assert_eq!(e.field, "spec.schedule");
        assert!(e.message.contains("write Sunday as 0"), "{e}");
        spec.schedule = "0 2 * * 0".into();
        assert!(validate(&spec).is_ok());
        spec.schedule = "0 2 * * 1-5".into();
        assert!(validate(&spec).is_ok());
    }
    use crate::reconcile::objects::test_identity;

    fn spec() -> BatchProcessorSpec {
        serde_yaml::from_str(
            r#"
version: "3.2.0"
schedule: "30 2 * * *"
timeZone: Europe/Berlin
args: [settle]
parallelism: 2
completions: 4
backoffLimit: 2
concurrencyPolicy: Forbid
activeDeadlineSeconds: 7200
startingDeadlineSeconds: 600
"#,
        )
        .expect("spec")
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("ts")
    }

    #[test]
    fn cron_job_carries_every_setting() {
        let s = spec();
        let o = plan(
            &test_identity(COMPONENT, "settle"),
            &validate(&s).expect("valid"),
            None,
        )
        .expect("plan");
        let Desired::Apply(cj) = o.cron_job else {
            panic!("cronjob")
        };
        let cs = cj.spec.expect("spec");
        assert_eq!(cs.schedule, "30 2 * * *");
        assert_eq!(cs.time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(cs.concurrency_policy.as_deref(), Some("Forbid"));
        assert_eq!(cs.starting_deadline_seconds, Some(600));
        assert_eq!(cs.suspend, Some(false));
        let js = cs.job_template.spec.expect("job spec");
        assert_eq!(
            (
                js.parallelism,
                js.completions,
                js.backoff_limit,
                js.active_deadline_seconds
            ),
            (Some(2), Some(4), Some(2), Some(7200))
        );
        let c = &js.template.spec.expect("pod").containers[0];
        assert_eq!(c.image.as_deref(), Some("ghcr.io/payments/batch:3.2.0"));
        assert_eq!(o.job, Desired::Unmanaged);
    }

    #[test]
    fn run_now_creates_one_deterministic_job() {
        let s = spec();
        let id = test_identity(COMPONENT, "settle");
        let o = plan(&id, &validate(&s).expect("valid"), Some("2026-11-26T10:00")).expect("plan");
        let Desired::Apply(job) = o.job else {
            panic!("job")
        };
        assert_eq!(
            job.metadata.name.as_deref(),
            Some(run_now_job_name("settle", "2026-11-26T10:00").as_str())
        );
        assert_ne!(
            run_now_job_name("settle", "a"),
            run_now_job_name("settle", "b")
        );
        assert_eq!(job.spec.expect("spec").completions, Some(4));
    }

    #[test]
    fn failures_count_since_the_last_success() {
        let s = spec();
        let ok = JobSummary {
            started: Some(t(100)),
            succeeded_at: Some(t(200)),
            failed_at: None,
            active: false,
        };
        let fail = |at| JobSummary {
            started: Some(t(at - 10)),
            succeeded_at: None,
            failed_at: Some(t(at)),
            active: false,
        };
        let (st, ev) = compute_status(
            &Default::default(),
            &s,
            None,
            &[fail(50), ok.clone(), fail(300), fail(400)],
            None,
            Some(1),
            t(500),
        );
        assert_eq!(st.consecutive_failures, 2);
        assert_eq!(st.last_successful_time.as_ref().map(|x| x.0), Some(t(200)));
        assert_eq!(st.last_failure_time.as_ref().map(|x| x.0), Some(t(400)));
        assert_eq!(st.phase, Phase::Degraded);
        assert!(ev.iter().any(|e| e.reason == "RunFailed" && e.warning));
        let (st2, _) = compute_status(&st, &s, None, &[ok], None, Some(1), t(600));
        assert_eq!(st2.consecutive_failures, 0);
        assert_eq!(st2.phase, Phase::Ready);
    }

    #[test]
    fn bad_schedule_or_zone_is_invalid() {
        let mut s = spec();
        s.schedule = "30 2 * * 8".into();
        assert_eq!(validate(&s).expect_err("dow 8").field, "spec.schedule");
        let mut s = spec();
        s.time_zone = Some("Berlin".into());
        assert_eq!(validate(&s).expect_err("zone").field, "spec.timeZone");
    }
}
