//! A real Kubernetes control plane on loopback — etcd, kube-apiserver and, on
//! request, kube-controller-manager — started as local processes, the way
//! controller-runtime's envtest does. Used by the integration tests and by
//! `autopilot sandbox`.
//!
//! The binaries are built once from the Go module proxy by
//! `tests/controlplane/build.sh` and cached outside the repository. Every
//! process started here is stopped when the [`ControlPlane`] is dropped, and
//! also when the owning process dies without dropping it (a panic in a test
//! holding it in a `static`, a SIGKILL): a small reaper process watches a pipe
//! from us and cleans up on end-of-file.
//!
//! kube-apiserver writes an audit log of the writes to payments.io resources
//! and Deployments ([`ControlPlane::audit_log`]): the API server's own record
//! of what was written, by whom, with which body — what the fault-injection
//! tests count an action's writes against. It can be stopped and started
//! again on the same port and etcd ([`ControlPlane::stop_apiserver`]).
//!
//! This module never changes objects in the cluster; it only starts it. It is
//! compiled only with the cargo feature `testenv` (with its dependencies,
//! rcgen and tempfile), so the agent's default build never contains it.

mod certs;
pub mod kubelet;
pub mod postgres;
pub mod prometheus;
pub mod release;
pub mod sim;

use std::{
    fs,
    io::Write,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

/// Environment variable naming a directory that already holds `etcd`,
/// `kube-apiserver` and `kube-controller-manager`; skips the build script.
pub const BIN_DIR_ENV: &str = "AUTOPILOT_TESTENV_BIN";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
const SERVICE_CIDR: &str = "10.96.0.0/16";
/// How long a stopped kube-apiserver may take to finish the requests in
/// flight (and write their audit events) before it is killed.
const APISERVER_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The audit policy: the request body (level `Request`) of every write —
/// create, update, patch, delete — to a payments.io resource (status
/// included) or to an apps/v1 Deployment; nothing else, reads least of all,
/// so the log stays small. Events only at `ResponseComplete` (and `Panic`).
const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
  - level: Request
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
    resources:
      - group: "payments.io"
      - group: "apps"
        resources: ["deployments", "deployments/scale", "deployments/status"]
  - level: None
"#;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "building the control plane binaries with {script} failed ({status}); see its output above"
    )]
    BuildBinaries { script: PathBuf, status: String },
    #[error("{BIN_DIR_ENV}={dir} does not contain an executable {binary}")]
    MissingBinary { dir: PathBuf, binary: &'static str },
    #[error("generating the control plane certificates failed")]
    GeneratePki(#[from] rcgen::Error),
    #[error("{what} failed")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} exited during start-up ({status}); last lines of {log}:\n{tail}")]
    ProcessExited {
        name: &'static str,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("{name} was not ready after {waited:?} ({last}); last lines of {log}:\n{tail}")]
    NotReady {
        name: &'static str,
        waited: Duration,
        last: String,
        log: PathBuf,
        tail: String,
    },
    #[error("building a client for the control plane failed")]
    Client(#[source] kube::Error),
    #[error("reading the generated kubeconfig failed")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
}

impl Error {
    /// Fixed category for metrics and test reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::BuildBinaries { .. } | Error::MissingBinary { .. } => "binaries",
            Error::GeneratePki(_) => "pki",
            Error::Io { .. } => "io",
            Error::ProcessExited { .. } | Error::NotReady { .. } => "startup",
            Error::Client(_) | Error::Kubeconfig(_) => "client",
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// What to start besides etcd and kube-apiserver.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Also run kube-controller-manager, so that Deployments roll out,
    /// ReplicaSets scale, CronJobs spawn Jobs and garbage collection deletes
    /// owned objects.
    pub controller_manager: bool,
}

/// Returns the directory holding the control plane binaries, building them
/// first when they are not cached yet (progress goes to stderr).
pub fn ensure_binaries() -> Result<PathBuf, Error> {
    const BINARIES: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let dir = PathBuf::from(dir);
        for binary in BINARIES {
            if !dir.join(binary).is_file() {
                return Err(Error::MissingBinary { dir, binary });
            }
        }
        return Ok(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/controlplane/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(io(format!("running {}", script.display())))?;
    if !out.status.success() {
        return Err(Error::BuildBinaries {
            script,
            status: out.status.to_string(),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().last().unwrap_or_default().trim();
    Ok(PathBuf::from(dir))
}

struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// How a process was started, to start it again the same way.
#[derive(Clone, Debug)]
struct Launch {
    binary: PathBuf,
    args: Vec<String>,
}

/// A running control plane. Dropping it stops every process and deletes its
/// working directory.
pub struct ControlPlane {
    work: PathBuf,
    /// In start order; behind a lock so that a shared control plane's API
    /// server can be stopped and started again.
    processes: Mutex<Vec<Process>>,
    reaper: Option<(Child, ChildStdin)>,
    kubeconfig: PathBuf,
    server: String,
    apiserver: Option<Launch>,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver (and kube-controller-manager when asked)
    /// on free loopback ports and waits until the API server reports ready.
    pub async fn start(options: Options) -> Result<Self, Error> {
        let bin = ensure_binaries()?;
        let work = tempfile::Builder::new()
            .prefix("autopilot-cp-")
            .tempdir()
            .map_err(io("creating the control plane work directory"))?
            .keep();
        let mut cp = ControlPlane {
            reaper: Some(spawn_reaper(&work)?),
            work,
            processes: Mutex::new(Vec::new()),
            kubeconfig: PathBuf::new(),
            server: String::new(),
            apiserver: None,
        };
        cp.boot(&bin, options).await?;
        Ok(cp)
    }

    async fn boot(&mut self, bin: &Path, options: Options) -> Result<(), Error> {
        let started = Instant::now();
        self.write_pki()?;
        let etcd_url = self.start_etcd(bin)?;
        self.start_apiserver(bin, &etcd_url)?;
        self.kubeconfig = self.work.join("kubeconfig");
        fs::write(&self.kubeconfig, self.kubeconfig_yaml())
            .map_err(io("writing the kubeconfig"))?;

        let client = self.client().await?;
        self.wait_ready("kube-apiserver", started, || {
            let client = client.clone();
            async move {
                let req = http::Request::get("/readyz")
                    .body(Vec::new())
                    .map_err(|e| e.to_string())?;
                client.request_text(req).await.map_err(|e| e.to_string())?;
                Ok(())
            }
        })
        .await?;

        if options.controller_manager {
            self.start_controller_manager(bin)?;
            // The service account controller creating `default/default` shows
            // the controllers are running against this API server.
            let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
                kube::Api::namespaced(client.clone(), "default");
            self.wait_ready("kube-controller-manager", started, || {
                let accounts = accounts.clone();
                async move {
                    match accounts.get_opt("default").await {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err("no default ServiceAccount yet".to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            })
            .await?;
        }
        tracing::info!(server = %self.server, elapsed = ?started.elapsed(), "control plane ready");
        Ok(())
    }

    /// A path in the work folder, as an argument.
    fn path(&self, name: &str) -> String {
        self.work.join(name).display().to_string()
    }

    /// The CA, the serving and admin certificates and the service-account
    /// signing key, written to the work folder.
    fn write_pki(&self) -> Result<(), Error> {
        let pki = certs::generate()?;
        let files = [
            ("ca.crt", &pki.ca_cert),
            ("apiserver.crt", &pki.serving_cert),
            ("apiserver.key", &pki.serving_key),
            ("admin.crt", &pki.admin_cert),
            ("admin.key", &pki.admin_key),
            ("sa.key", &pki.service_account_key),
            ("sa.pub", &pki.service_account_pub),
        ];
        for (name, content) in files {
            fs::write(self.work.join(name), content).map_err(io(format!("writing {name}")))?;
        }
        Ok(())
    }

    /// Starts etcd on two free ports; its client URL.
    fn start_etcd(&mut self, bin: &Path) -> Result<String, Error> {
        let etcd_url = format!("http://127.0.0.1:{}", free_port()?);
        let peer_url = format!("http://127.0.0.1:{}", free_port()?);
        let data_dir = self.path("etcd-data");
        self.spawn(
            "etcd",
            bin.join("etcd"),
            vec![
                format!("--data-dir={data_dir}"),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                // Tests throw the data away; fsync only costs time.
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
                "--quota-backend-bytes=4294967296".into(),
            ],
        )?;
        Ok(etcd_url)
    }

    /// Starts kube-apiserver on a free port, with RBAC authorization.
    fn start_apiserver(&mut self, bin: &Path, etcd_url: &str) -> Result<(), Error> {
        let api_port = free_port()?;
        self.server = format!("https://127.0.0.1:{api_port}");
        let p = |name: &str| self.path(name);
        let args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", p("apiserver-certs")),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--allow-privileged=true".into(),
            // Pods are created right after their namespace in tests; the
            // ServiceAccount admission plugin would race the controller
            // that creates the `default` account.
            "--disable-admission-plugins=ServiceAccount".into(),
            "--enable-priority-and-fairness=false".into(),
            "--profiling=false".into(),
            "--v=0".into(),
        ];
        fs::write(self.work.join("audit-policy.yaml"), AUDIT_POLICY)
            .map_err(io("writing the audit policy"))?;
        let args = args
            .into_iter()
            .chain([
                format!("--audit-policy-file={}", p("audit-policy.yaml")),
                format!("--audit-log-path={}", self.audit_log().display()),
                "--audit-log-format=json".into(),
                // Each event is written before the response is sent: an
                // answered write is always in the log.
                "--audit-log-mode=blocking".into(),
                // Megabytes; no test comes near it, so the log never rotates.
                "--audit-log-maxsize=2048".into(),
                "--audit-log-maxbackup=1".into(),
                // On SIGTERM, close the watches (a few seconds) instead of
                // waiting the HTTP server's minute for them to end.
                "--shutdown-watch-termination-grace-period=2s".into(),
            ])
            .collect();
        let launch = Launch {
            binary: bin.join("kube-apiserver"),
            args,
        };
        self.spawn("kube-apiserver", launch.binary.clone(), launch.args.clone())?;
        self.apiserver = Some(launch);
        Ok(())
    }

    /// Starts kube-controller-manager against the API server.
    fn start_controller_manager(&mut self, bin: &Path) -> Result<(), Error> {
        let args = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
            format!("--service-account-private-key-file={}", self.path("sa.key")),
            format!("--root-ca-file={}", self.path("ca.crt")),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            // No real kubelets heartbeat here: the node lifecycle
            // controller would taint the tests' fake Node and evict
            // its pods.
            "--controllers=*,-node-lifecycle-controller".into(),
            // Its client's default (20 requests/s, bursts of 30) throttles
            // thousands of rollouts at once (`cargo bench --bench
            // reconcile`); a local API server takes far more.
            "--kube-api-qps=500".into(),
            "--kube-api-burst=1000".into(),
            "--profiling=false".into(),
            "--v=0".into(),
        ];
        self.spawn(
            "kube-controller-manager",
            bin.join("kube-controller-manager"),
            args,
        )
    }

    fn kubeconfig_yaml(&self) -> String {
        let p = |name: &str| self.work.join(name).display().to_string();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: autopilot-testenv\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: autopilot-testenv\n  context:\n    cluster: autopilot-testenv\n    user: admin\ncurrent-context: autopilot-testenv\n",
            self.server,
            p("ca.crt"),
            p("admin.crt"),
            p("admin.key"),
        )
    }

    fn spawn(
        &mut self,
        name: &'static str,
        binary: PathBuf,
        args: Vec<String>,
    ) -> Result<(), Error> {
        let process = self.launch(name, &binary, &args)?;
        self.processes
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .push(process);
        Ok(())
    }

    /// Starts one process, its output appended to `<name>.log` (a restart
    /// keeps the earlier lines), and hands its pid to the reaper.
    fn launch(&self, name: &'static str, binary: &Path, args: &[String]) -> Result<Process, Error> {
        let log = self.work.join(format!("{name}.log"));
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(format!("opening {}", log.display())))?;
        let err = out.try_clone().map_err(io("duplicating a log handle"))?;
        let child = Command::new(binary)
            .args(args)
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io(format!("starting {}", binary.display())))?;
        if let Some((_, stdin)) = self.reaper.as_ref() {
            // Best effort: if the reaper is gone, Drop still stops the child.
            let mut stdin: &ChildStdin = stdin;
            let _ = writeln!(stdin, "{}", child.id());
        }
        Ok(Process { name, child, log })
    }

    fn processes(&self) -> MutexGuard<'_, Vec<Process>> {
        self.processes.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn wait_ready<F, Fut>(
        &mut self,
        name: &'static str,
        started: Instant,
        mut probe: F,
    ) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let mut last = String::from("not probed yet");
        while started.elapsed() < STARTUP_TIMEOUT {
            if let Some(exited) = self.exited(None) {
                return Err(exited);
            }
            match probe().await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log = self.work.join(format!("{name}.log"));
        Err(Error::NotReady {
            name,
            waited: started.elapsed(),
            last,
            tail: tail(&log, 30),
            log,
        })
    }

    /// A new client for this control plane, authenticated as a cluster admin.
    /// Create one per async runtime: a client's connections belong to the
    /// runtime that made them.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        kube::Client::try_from(self.config().await?).map_err(Error::Client)
    }

    /// The admin client configuration, to adjust (e.g. impersonate a
    /// service account) before building a client.
    pub async fn config(&self) -> Result<kube::Config, Error> {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&self.kubeconfig).map_err(Error::Kubeconfig)?;
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(Error::Kubeconfig)
    }

    /// Path of an admin kubeconfig for this control plane (for kubectl).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The first of the processes (or only the one named `only`) found to
    /// have exited, as an error.
    fn exited(&self, only: Option<&str>) -> Option<Error> {
        self.processes()
            .iter_mut()
            .filter(|p| only.is_none_or(|n| n == p.name))
            .find_map(|p| {
                let status = p.child.try_wait().ok().flatten()?;
                Some(Error::ProcessExited {
                    name: p.name,
                    status,
                    log: p.log.clone(),
                    tail: tail(&p.log, 30),
                })
            })
    }

    /// The API server's audit log: one JSON event per line for every
    /// create, update, patch and delete of a payments.io resource or a
    /// Deployment, with its request body, written before the API server
    /// answered. It survives [`Self::stop_apiserver`].
    pub fn audit_log(&self) -> PathBuf {
        self.work.join("audit.log")
    }

    /// Stops kube-apiserver as a node shutdown would (SIGTERM: it stops
    /// accepting, finishes the requests in flight and writes their audit
    /// events; killed after a minute). etcd keeps running;
    /// [`Self::start_apiserver_again`] brings it back on the same port.
    pub async fn stop_apiserver(&self) -> Result<(), Error> {
        let pid = {
            let mut processes = self.processes();
            let p = processes
                .iter_mut()
                .find(|p| p.name == "kube-apiserver")
                .ok_or_else(|| io("finding kube-apiserver")(std::io::ErrorKind::NotFound.into()))?;
            if let Ok(Some(_)) = p.child.try_wait() {
                return Ok(());
            }
            p.child.id()
        };
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + APISERVER_STOP_TIMEOUT;
        loop {
            {
                let mut processes = self.processes();
                if let Some(p) = processes.iter_mut().find(|p| p.name == "kube-apiserver") {
                    match p.child.try_wait() {
                        Ok(Some(_)) | Err(_) => return Ok(()),
                        Ok(None) if Instant::now() > deadline => {
                            let _ = p.child.kill();
                            let _ = p.child.wait();
                            return Ok(());
                        }
                        Ok(None) => {}
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts kube-apiserver again after [`Self::stop_apiserver`], with the
    /// same flags: same port, certificates, etcd and audit log (appended).
    /// Returns once it reports ready.
    pub async fn start_apiserver_again(&self) -> Result<(), Error> {
        let started = Instant::now();
        let launch = self.apiserver.clone().ok_or_else(|| {
            io("finding how kube-apiserver was started")(std::io::ErrorKind::NotFound.into())
        })?;
        {
            let mut processes = self.processes();
            let p = processes
                .iter_mut()
                .find(|p| p.name == "kube-apiserver")
                .ok_or_else(|| io("finding kube-apiserver")(std::io::ErrorKind::NotFound.into()))?;
            if let Ok(None) = p.child.try_wait() {
                return Ok(());
            }
        }
        let fresh = self.launch("kube-apiserver", &launch.binary, &launch.args)?;
        {
            let mut processes = self.processes();
            if let Some(p) = processes.iter_mut().find(|p| p.name == "kube-apiserver") {
                *p = fresh;
            }
        }
        let client = self.client().await?;
        let mut last = String::from("not probed yet");
        while started.elapsed() < STARTUP_TIMEOUT {
            if let Some(exited) = self.exited(Some("kube-apiserver")) {
                return Err(exited);
            }
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| e.to_string());
            match req {
                Ok(req) => match client.request_text(req).await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log = self.work.join("kube-apiserver.log");
        Err(Error::NotReady {
            name: "kube-apiserver",
            waited: started.elapsed(),
            last,
            tail: tail(&log, 30),
            log,
        })
    }

    /// The last `lines` lines of a component's log, for test failure messages.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        tail(&self.work.join(format!("{name}.log")), lines)
    }

    /// A namespace name no other test in this process uses.
    pub fn unique_name(prefix: &str) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{}-{n}", std::process::id())
    }

    /// Stops the processes (controller manager first, etcd last) and removes
    /// the work directory.
    pub fn stop(&mut self) {
        let processes = self.processes.get_mut().unwrap_or_else(|e| e.into_inner());
        while let Some(mut p) = processes.pop() {
            terminate(&mut p.child);
        }
        if let Some((mut reaper, stdin)) = self.reaper.take() {
            drop(stdin);
            let _ = reaper.wait();
        }
        let _ = fs::remove_dir_all(&self.work);
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGTERM, then SIGKILL after two seconds (the data is thrown away; the API
/// server's graceful shutdown only costs test time).
fn terminate(child: &mut Child) {
    stop(child, Duration::from_secs(2));
}

/// SIGTERM, then SIGKILL if `child` has not exited after `grace`; waits for
/// it either way. `kill(1)` keeps this free of `unsafe` libc calls.
pub fn stop(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The reaper reads process ids from its stdin; when that pipe closes —
/// because we stopped normally or because this process died — it stops those
/// processes and removes the work directory. It ignores SIGINT so that a
/// Ctrl-C on the test run still leaves it time to clean up.
fn spawn_reaper(work: &Path) -> Result<(Child, ChildStdin), Error> {
    const SCRIPT: &str = r#"
trap '' INT
pids=""
while read -r pid; do pids="$pids $pid"; done
[ -n "$pids" ] && kill -TERM $pids 2>/dev/null
for _ in $(seq 1 20); do
  alive=""
  for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
  [ -z "$alive" ] && break
  sleep 0.1
done
[ -n "$alive" ] && kill -KILL $alive 2>/dev/null
rm -rf "$1"
"#;
    let mut child = Command::new("sh")
        .args(["-c", SCRIPT, "autopilot-reaper"])
        .arg(work)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io("starting the reaper"))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| io("opening the reaper's stdin")(std::io::ErrorKind::BrokenPipe.into()))?;
    Ok((child, stdin))
}

fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(io("finding a free port"))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ() {
        assert_ne!(
            ControlPlane::unique_name("t"),
            ControlPlane::unique_name("t")
        );
    }
}
