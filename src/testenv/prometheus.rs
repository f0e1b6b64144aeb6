//! A real Prometheus (the Debian `prometheus` package) on loopback for the
//! observe tests and the sandbox: a temporary data directory optionally
//! backfilled with `promtool tsdb create-blocks-from openmetrics`, a config
//! scraping the given targets every second, and a tiny test exporter serving
//! whatever text the test sets.
//!
//! Like the control plane, the process is stopped when the [`Prometheus`] is
//! dropped and, through the same reaper, when the test binary dies. This
//! module starts processes and serves test metrics; it never talks to a
//! cluster.

use std::{
    fs,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::{free_port, spawn_reaper, tail, terminate};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{binary} is not installed (scripts/install-deps installs Debian's prometheus)")]
    MissingBinary { binary: &'static str },
    #[error("{what} failed")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("backfilling history with promtool failed ({status}):\n{output}")]
    Backfill { status: String, output: String },
    #[error("starting the test control plane helpers failed")]
    Testenv(#[from] super::Error),
    #[error("prometheus exited during start-up; last lines of {log}:\n{tail}")]
    Exited { log: PathBuf, tail: String },
    #[error("prometheus was not ready after {waited:?}; last lines of {log}:\n{tail}")]
    NotReady {
        waited: Duration,
        log: PathBuf,
        tail: String,
    },
}

impl Error {
    /// Fixed category for test reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::MissingBinary { .. } => "binaries",
            Error::Io { .. } => "io",
            Error::Backfill { .. } => "backfill",
            Error::Testenv(e) => e.kind(),
            Error::Exited { .. } | Error::NotReady { .. } => "startup",
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// What to start Prometheus with.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `host:port` targets scraped every second under job `test`.
    pub targets: Vec<String>,
    /// OpenMetrics text (ending in `# EOF`) written into the TSDB before
    /// start-up with promtool.
    pub backfill: Option<String>,
}

/// A running Prometheus. Dropping it stops the process and deletes its data.
pub struct Prometheus {
    work: PathBuf,
    child: Option<Child>,
    reaper: Option<(Child, ChildStdin)>,
    url: String,
    /// How the server is started, to start it again after [`Prometheus::kill`].
    binary: PathBuf,
    args: Vec<String>,
}

fn which(binary: &'static str) -> Result<PathBuf, Error> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .ok_or(Error::MissingBinary { binary })
}

impl Prometheus {
    /// Backfills (when asked), starts Prometheus on a free loopback port and
    /// waits until `/-/ready` answers.
    pub fn start(options: &Options) -> Result<Self, Error> {
        let prometheus = which("prometheus")?;
        let work = tempfile::Builder::new()
            .prefix("autopilot-prom-")
            .tempdir()
            .map_err(io("creating the prometheus work directory"))?
            .keep();
        let mut me = Prometheus {
            reaper: Some(spawn_reaper(&work)?),
            work,
            child: None,
            url: String::new(),
            binary: PathBuf::new(),
            args: Vec::new(),
        };
        let data = me.work.join("data");
        fs::create_dir_all(&data).map_err(io("creating the data directory"))?;
        if let Some(text) = &options.backfill {
            backfill(&me.work, &data, text)?;
        }
        let targets = options
            .targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: test\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    static_configs:\n      - targets: [{targets}]\n"
        );
        let config_path = me.work.join("prometheus.yml");
        fs::write(&config_path, config).map_err(io("writing prometheus.yml"))?;
        let port = free_port()?;
        me.url = format!("http://127.0.0.1:{port}");
        me.args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            // Backfilled days must survive the retention check.
            "--storage.tsdb.retention.time=3650d".into(),
            "--log.level=warn".into(),
        ];
        me.binary = prometheus;
        me.serve()?;
        Ok(me)
    }

    /// Starts the server with the stored flags (its log appended to) and
    /// waits until `/-/ready` answers.
    fn serve(&mut self) -> Result<(), Error> {
        let log = self.work.join("prometheus.log");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io("opening the prometheus log"))?;
        let err = out.try_clone().map_err(io("duplicating a log handle"))?;
        let child = Command::new(&self.binary)
            .args(&self.args)
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io("starting prometheus"))?;
        if let Some((_, stdin)) = self.reaper.as_mut() {
            let _ = writeln!(stdin, "{}", child.id());
        }
        self.child = Some(child);
        let addr = self.url.trim_start_matches("http://").to_string();
        let started = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return Err(Error::Exited {
                    tail: tail(&log, 30),
                    log,
                });
            }
            if http_get(&addr, "/-/ready").is_ok_and(|(code, _)| code == 200) {
                return Ok(());
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                return Err(Error::NotReady {
                    waited: started.elapsed(),
                    tail: tail(&log, 30),
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:39123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops Prometheus now (to test "Prometheus down"); the URL then refuses
    /// connections.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c);
        }
    }

    /// Starts Prometheus again after [`Prometheus::kill`]: same port, same
    /// data (the samples scraped before are kept), same targets. Returns
    /// once it is ready; a running server is left alone.
    pub fn restart(&mut self) -> Result<(), Error> {
        if let Some(c) = self.child.as_mut()
            && let Ok(None) = c.try_wait()
        {
            return Ok(());
        }
        self.serve()
    }

    /// The last lines of Prometheus' log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.work.join("prometheus.log"), lines)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
        if let Some((mut reaper, stdin)) = self.reaper.take() {
            drop(stdin);
            let _ = reaper.wait();
        }
        let _ = fs::remove_dir_all(&self.work);
    }
}

fn backfill(work: &Path, data: &Path, text: &str) -> Result<(), Error> {
    let promtool = which("promtool")?;
    let input = work.join("backfill.om");
    fs::write(&input, text).map_err(io("writing the backfill file"))?;
    let out = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .map_err(io("running promtool"))?;
    if !out.status.success() {
        return Err(Error::Backfill {
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

/// A minimal blocking HTTP/1.0 GET: (status code, body).
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// A metrics endpoint on loopback serving the text last given to
/// [`Exporter::set`] in the Prometheus text format. Stops when dropped.
pub struct Exporter {
    addr: String,
    body: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Exporter {
    pub fn start() -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io("binding the test exporter"))?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the exporter's address"))?
            .to_string();
        listener
            .set_nonblocking(true)
            .map_err(io("configuring the exporter socket"))?;
        let body = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, st) = (body.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
                        let mut req = [0u8; 4096];
                        let _ = conn.read(&mut req);
                        let text = b.lock().map(|t| t.clone()).unwrap_or_default();
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                            text.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Exporter {
            addr,
            body,
            stop,
            thread: Some(thread),
        })
    }

    /// `host:port` to put in [`Options::targets`].
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Replaces the exposition text served from now on.
    pub fn set(&self, text: impl Into<String>) {
        if let Ok(mut b) = self.body.lock() {
            *b = text.into();
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
