//! `feral-node certs …`, `run` and `sync`: certificates, serving sync, one sync session.

use crate::out::out;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Subcommand;
use feral_memory::Node;
use feral_memory::identity::NodeId;
use feral_memory::revocation::Statement;
use feral_memory::service::{Scrub, Service, ServiceConfig};
use feral_transport::driver::{Timeouts, client_endpoint};
use feral_transport::tls::{CA_CERT_FILE, Ca, Credentials, NODE_CERT_FILE, signing_request};
use feral_transport::{PeerLocks, SyncOptions, Syncer};

use crate::{Failure, Outcome, fail, open, print_json};

/// `feral-node certs …`.
#[derive(Debug, Subcommand)]
pub(crate) enum Certs {
    /// Create a cluster CA (ca.pem, ca.key) in a directory kept off the nodes; refuses a
    /// directory that already holds one.
    NewCa {
        /// Where to write it (created 0700).
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing CA (every node it issued stops being trusted).
        #[arg(long)]
        force: bool,
    },
    /// Issue this node a certificate for its own key, and install the CA certificate (the CA
    /// key must be readable here; `csr` + `sign` + `install` keep it off the node).
    Issue {
        /// The CA directory.
        #[arg(long)]
        ca: PathBuf,
    },
    /// Issue a fresh certificate for the same key (the node id stays the same; new serial).
    Renew {
        /// The CA directory.
        #[arg(long)]
        ca: PathBuf,
    },
    /// Write a certificate signing request for this node's key (default <data>/node.csr), to
    /// be signed where the CA is (`certs sign`).
    Csr {
        /// Where to write the request.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Where the CA is: sign a node's request into a directory holding node.pem and ca.pem
    /// (take that directory to the node and run `certs install`).
    Sign {
        /// The request (`certs csr` output).
        #[arg(long)]
        csr: PathBuf,
        /// The CA directory.
        #[arg(long)]
        ca: PathBuf,
        /// The directory to write node.pem and ca.pem into (created 0700).
        #[arg(long)]
        out: PathBuf,
    },
    /// Install a signed certificate (node.pem and ca.pem from `certs sign`) after checking it
    /// is for this node's key and chains to that CA.
    Install {
        /// The directory `certs sign` wrote.
        #[arg(long)]
        from: PathBuf,
    },
    /// Revoke a node (a stolen machine): a statement signed by the cluster CA key, written to
    /// this node's log so that it reaches every node through sync. Each node that learns it
    /// refuses that node's handshakes (`revoked`) and its ops past what it held then.
    Revoke {
        /// The node id to revoke (32 hex, as its `status` shows).
        node_id: String,
        /// The CA directory (its key signs the statement).
        #[arg(long)]
        ca: PathBuf,
        /// Why (kept with the revocation; at most 256 bytes).
        #[arg(long, default_value = "")]
        reason: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// The CA's statement that `node_id` is revoked, made now.
pub(crate) fn statement(node_id: &str, ca: &Path, reason: &str) -> Result<Statement, Failure> {
    let id = feral_log::op::parse_hex16(node_id)
        .ok_or_else(|| fail(2, format!("{node_id:?} is not a node id (32 hex characters)")))?;
    let ca = Ca::load(ca).map_err(transport)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Ok(Statement::sign(&ca, NodeId(id), reason, now_ms)?)
}

/// Prints what `certs revoke` did: the answer of `POST /v1/revocations` (or its equal).
pub(crate) fn print_revoked(node_id: &str, answer: &serde_json::Value, json: bool) -> Outcome {
    if json {
        return print_json(answer, false);
    }
    let op = answer["appended"]["op_id"].as_str().unwrap_or("-");
    let was = if answer["newly_revoked"] == true { "" } else { " (it was revoked here already)" };
    out!(
        "revoked node {node_id}{was}; the statement is op {op} and reaches the other nodes with \
         the next syncs"
    );
    Ok(0)
}

fn transport(e: feral_transport::TransportError) -> Failure {
    fail(1, e.to_string())
}

fn read_text(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| fail(1, format!("{}: {e}", path.display())))
}

pub(crate) fn certs(command: Certs, data: &Path) -> Outcome {
    match command {
        Certs::NewCa { out, force } => {
            let ca = Ca::generate().map_err(transport)?;
            if force && out.join(feral_transport::tls::CA_KEY_FILE).exists() {
                eprintln!(
                    "feral-node: warning: replacing the cluster CA in {}; nodes it issued are no \
                     longer trusted by nodes that take the new one",
                    out.display()
                );
            }
            ca.save(&out, force).map_err(transport)?;
            let id: String =
                ca.cluster_id().map_err(transport)?.iter().map(|b| format!("{b:02x}")).collect();
            out!(
                "created a cluster CA in {} (cluster id {id}); keep ca.key off the nodes",
                out.display()
            );
            Ok(0)
        }
        Certs::Issue { ca } | Certs::Renew { ca } => {
            let ca = Ca::load(&ca).map_err(transport)?;
            let node = open(data)?;
            let cert = ca.issue_default(node.key()).map_err(transport)?;
            write(&data.join(NODE_CERT_FILE), &cert)?;
            write(&data.join(CA_CERT_FILE), &ca.cert_pem)?;
            out!("issued a certificate for node {} into {}", node.node_id(), data.display());
            node.close()?;
            Ok(0)
        }
        Certs::Csr { out } => {
            let node = open(data)?;
            let out = out.unwrap_or_else(|| data.join(CSR_FILE));
            write(&out, &signing_request(node.key()).map_err(transport)?)?;
            out!(
                "wrote a signing request for node {} to {}; sign it where the CA is: \
                 feral-node certs sign --csr FILE --ca CA_DIR --out DIR",
                node.node_id(),
                out.display()
            );
            node.close()?;
            Ok(0)
        }
        Certs::Sign { csr, ca, out } => {
            let ca = Ca::load(&ca).map_err(transport)?;
            let (cert, node_id) = ca.sign_request(&read_text(&csr)?).map_err(transport)?;
            feral_log::private::create_dir_all(&out)
                .map_err(|e| fail(1, format!("{}: {e}", out.display())))?;
            write(&out.join(NODE_CERT_FILE), &cert)?;
            write(&out.join(CA_CERT_FILE), &ca.cert_pem)?;
            let hex: String = node_id.iter().map(|b| format!("{b:02x}")).collect();
            out!(
                "signed a certificate for node {hex} into {}; on the node: feral-node certs \
                 install --from DIR",
                out.display()
            );
            Ok(0)
        }
        Certs::Revoke { node_id, ca, reason, json } => {
            let statement = statement(&node_id, &ca, &reason)?;
            let node = open(data)?;
            let (appended, newly) = node.revoke(&statement)?;
            node.close()?;
            let answer = serde_json::json!({
                "appended": {"op_id": appended.op_id.to_string(), "seq": appended.seq,
                    "duplicate": appended.duplicate},
                "newly_revoked": newly,
            });
            print_revoked(&statement.node_id, &answer, json)
        }
        Certs::Install { from } => {
            let cert = read_text(&from.join(NODE_CERT_FILE))?;
            let ca_cert = read_text(&from.join(CA_CERT_FILE))?;
            let node = open(data)?;
            let creds = Credentials::from_pem(&cert, node.key(), &ca_cert).map_err(transport)?;
            creds.verify_own().map_err(transport)?;
            write(&data.join(NODE_CERT_FILE), &cert)?;
            write(&data.join(CA_CERT_FILE), &ca_cert)?;
            out!("installed the certificate of node {} into {}", node.node_id(), data.display());
            node.close()?;
            Ok(0)
        }
    }
}

/// `certs issue` / `certs renew` while a node runs: the certificate is issued for the key in
/// the data directory and written there, and the running node takes it at once (new
/// sessions present it; no restart).
pub(crate) fn renew_running(remote: &crate::cli_remote::Remote, ca: &Path) -> Outcome {
    let ca = Ca::load(ca).map_err(transport)?;
    let (key, id) = feral_memory::identity::load_or_create(&remote.data)?;
    let cert = ca.issue_default(&key).map_err(transport)?;
    let creds = Credentials::from_pem(&cert, &key, &ca.cert_pem).map_err(transport)?;
    creds.verify_own().map_err(transport)?;
    take_running(remote, &cert, &ca.cert_pem, &id.to_string())
}

/// `certs install` while a node runs: checked, written, and taken by the running node.
pub(crate) fn install_running(remote: &crate::cli_remote::Remote, from: &Path) -> Outcome {
    let cert = read_text(&from.join(NODE_CERT_FILE))?;
    let ca_cert = read_text(&from.join(CA_CERT_FILE))?;
    let (key, id) = feral_memory::identity::load_or_create(&remote.data)?;
    let creds = Credentials::from_pem(&cert, &key, &ca_cert).map_err(transport)?;
    creds.verify_own().map_err(transport)?;
    take_running(remote, &cert, &ca_cert, &id.to_string())
}

fn take_running(
    remote: &crate::cli_remote::Remote,
    cert: &str,
    ca_cert: &str,
    node_id: &str,
) -> Outcome {
    // The node checks the cluster before it takes anything; the old files are kept until it
    // did, so a refused certificate leaves the node as it was.
    let (cert_path, ca_path) = (remote.data.join(NODE_CERT_FILE), remote.data.join(CA_CERT_FILE));
    let old = (std::fs::read_to_string(&cert_path).ok(), std::fs::read_to_string(&ca_path).ok());
    write(&cert_path, cert)?;
    write(&ca_path, ca_cert)?;
    match remote.expect_ok("POST", "/v1/certs/reload", None) {
        Ok(answer) => {
            let until = answer["certificate"]["not_after_unix_s"].as_i64().unwrap_or(0);
            out!(
                "the running node {node_id} took its new certificate (valid until unix {until}); new sessions present it"
            );
            Ok(0)
        }
        Err(refused) => {
            if let (Some(c), Some(a)) = old {
                write(&cert_path, &c)?;
                write(&ca_path, &a)?;
            }
            Err(refused)
        }
    }
}

/// The signing request file `certs csr` writes by default.
const CSR_FILE: &str = "node.csr";

fn write(path: &Path, text: &str) -> Result<(), Failure> {
    feral_transport::tls::write_file(path, text.as_bytes()).map_err(transport)
}

/// The node's certificate, key and trusted CA(s) from its data directory.
fn credentials(node: &Node) -> Result<Credentials, Failure> {
    let read = |name: &str| {
        let path = node.dir().join(name);
        std::fs::read_to_string(&path).map_err(|e| {
            fail(1, format!("{}: {e}; run `feral-node certs issue --ca DIR` first", path.display()))
        })
    };
    Credentials::from_pem(&read(NODE_CERT_FILE)?, node.key(), &read(CA_CERT_FILE)?)
        .map_err(transport)
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(1, format!("starting the runtime: {e}")))
}

/// SIGINT and SIGTERM, listened to from the moment this is called (so a signal that comes
/// right after the node says it is listening stops it cleanly instead of killing it).
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind| signal(kind).map_err(|e| fail(1, format!("listening for signals: {e}")));
    let (mut term, mut int) = (listen(SignalKind::terminate())?, listen(SignalKind::interrupt())?);
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Where the local CA of the first `run` lives: the platform config directory
/// (`$XDG_CONFIG_HOME/feral-memory/local-ca`, else `~/.config/feral-memory/local-ca`), never
/// the data directory (SPEC 9: the CA key never lives beside the data it protects).
pub(crate) fn local_ca_dir() -> Result<PathBuf, Failure> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| fail(1, "no config directory: set HOME or XDG_CONFIG_HOME"))?;
    Ok(config.join("feral-memory").join("local-ca"))
}

/// The local CA, created on first use: written whole into a staging directory and renamed
/// into place, so two first runs at once never see half a CA; the loser takes the winner's.
fn local_ca(dir: &Path) -> Result<Ca, Failure> {
    if let Ok(ca) = Ca::load(dir) {
        return Ok(ca);
    }
    let io = |e: std::io::Error| fail(1, format!("{}: {e}", dir.display()));
    let parent = dir.parent().ok_or_else(|| fail(1, format!("{} has no parent", dir.display())))?;
    feral_log::private::create_dir_all(parent).map_err(io)?;
    let staging = parent.join(format!(".local-ca.{}", std::process::id()));
    let ca = Ca::generate().map_err(transport)?;
    ca.save(&staging, true).map_err(transport)?;
    match std::fs::rename(&staging, dir) {
        Ok(()) => Ok(ca),
        Err(_) => {
            let _ = std::fs::remove_dir_all(&staging);
            Ca::load(dir).map_err(transport)
        }
    }
}

/// The local CA (when this machine has one) is held to the same rule as the data directory.
fn refuse_shared_local_ca() -> Result<(), Failure> {
    // No config directory (no HOME): no local CA to hold to anything.
    let Ok(dir) = local_ca_dir() else { return Ok(()) };
    for path in [dir.clone(), dir.join(feral_transport::tls::CA_KEY_FILE)] {
        let found = feral_log::private::shared(&path)
            .map_err(|e| fail(1, format!("{}: {e}", path.display())))?;
        if let Some(shared) = found {
            return Err(fail(1, format!("refusing to start: the local CA: {shared}")));
        }
    }
    Ok(())
}

/// On a fresh machine: the store, and a local CA (kept in the platform config directory) with
/// a certificate for this node, so `run` works with no set-up. A cluster of several machines
/// issues from one CA instead (`certs new-ca`, `certs csr`/`sign`/`install`).
fn first_run(data: &Path) -> Result<(), Failure> {
    if !data.join(feral_log::wal::ORIGIN_FILE).exists() {
        Node::open(data, feral_log::Config::default())?.close()?;
        eprintln!("feral-node: created a store in {}", data.display());
    }
    if !data.join(NODE_CERT_FILE).exists() {
        let ca_dir = local_ca_dir()?;
        let ca = local_ca(&ca_dir)?;
        let node = open(data)?;
        write(&data.join(NODE_CERT_FILE), &ca.issue_default(node.key()).map_err(transport)?)?;
        write(&data.join(CA_CERT_FILE), &ca.cert_pem)?;
        node.close()?;
        eprintln!(
            "feral-node: created a certificate for this node from the local CA in {}; to sync \
             with other machines, issue every node from one CA (feral-node certs --help)",
            ca_dir.display()
        );
    }
    Ok(())
}

/// Files a running node refuses to start with when its group or others can reach them (as
/// OpenSSH and PostgreSQL refuse): the data directory, the node key and the API token.
fn refuse_shared(data: &Path) -> Result<(), Failure> {
    let check = [
        data.to_path_buf(),
        data.join(feral_memory::identity::NODE_KEY_FILE),
        data.join(feral_memory::api::TOKEN_FILE),
    ];
    for path in check {
        let found = feral_log::private::shared(&path)
            .map_err(|e| fail(1, format!("{}: {e}", path.display())))?;
        if let Some(shared) = found {
            return Err(fail(1, format!("refusing to start: {shared}")));
        }
    }
    Ok(())
}

/// `run`'s flags, before the config file and the defaults fill what they leave out.
#[derive(Debug)]
pub(crate) struct RunFlags {
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) sync_interval: Option<u64>,
    pub(crate) no_mdns: bool,
    pub(crate) peers: Option<String>,
    pub(crate) api: Option<SocketAddr>,
    pub(crate) config: Option<PathBuf>,
    pub(crate) scrub_rate: Option<u64>,
    pub(crate) scrub_every: Option<u64>,
}

/// The optional config file (`feral.toml`): every key optional, unknown keys refused.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    api: Option<SocketAddr>,
    sync_interval_secs: Option<u64>,
    scrub_bytes_per_sec: Option<u64>,
    scrub_every_secs: Option<u64>,
    mdns: Option<bool>,
    #[serde(default)]
    peers: Vec<String>,
    connect_timeout_ms: Option<u64>,
    handshake_timeout_ms: Option<u64>,
    progress_timeout_ms: Option<u64>,
    /// Host names the API accepts beside localhost, 127.0.0.1 and [::1].
    #[serde(default)]
    api_hosts: Vec<String>,
    /// Origins whose web pages may call the API (none by default).
    #[serde(default)]
    api_origins: Vec<String>,
    /// Largest API request body in bytes.
    api_body_bytes_max: Option<usize>,
    /// How far ahead of this node's clock a received op's HLC, or a written episode's
    /// created_at, may be (seconds; default 60).
    max_drift_secs: Option<u64>,
}

const CONFIG_FILE: &str = "feral.toml";
const CONFIG_BYTES_MAX: u64 = 1024 * 1024;

fn read_config(data: &Path, explicit: Option<&Path>) -> Result<FileConfig, Failure> {
    let path = explicit.map(Path::to_path_buf).unwrap_or_else(|| data.join(CONFIG_FILE));
    let bad = |why: String| fail(2, format!("{}: {why}", path.display()));
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            return Ok(FileConfig::default());
        }
        Err(e) => return Err(bad(e.to_string())),
        Ok(meta) if meta.len() > CONFIG_BYTES_MAX => {
            return Err(bad(format!("larger than {CONFIG_BYTES_MAX} bytes")));
        }
        Ok(_) => {}
    }
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    toml::from_str(&text).map_err(|e| bad(e.to_string()))
}

/// The session timeouts, from the config file (at least 100 ms each) or the defaults.
fn timeouts(file: &FileConfig) -> Timeouts {
    let ms = |v: Option<u64>, d: std::time::Duration| {
        v.map_or(d, |ms| std::time::Duration::from_millis(ms.max(100)))
    };
    let d = Timeouts::default();
    Timeouts {
        connect: ms(file.connect_timeout_ms, d.connect),
        handshake: ms(file.handshake_timeout_ms, d.handshake),
        progress: ms(file.progress_timeout_ms, d.progress),
        session: d.session,
    }
}

/// The API's settings from the config file.
fn api_config(file: &FileConfig) -> Result<feral_memory::api::ApiConfig, Failure> {
    let mut config = feral_memory::api::ApiConfig::default();
    for origin in &file.api_origins {
        if origin == "*" || !(origin.starts_with("http://") || origin.starts_with("https://")) {
            return Err(fail(
                2,
                format!(
                    "api_origins: {origin:?} is not an origin like \"http://localhost:3000\" (\"*\" is never allowed)"
                ),
            ));
        }
    }
    config.hosts = file.api_hosts.clone();
    config.origins = file.api_origins.iter().map(|o| o.trim_end_matches('/').to_string()).collect();
    if let Some(max) = file.api_body_bytes_max {
        config.body_bytes_max = max;
    }
    Ok(config)
}

/// What `run` serves, resolved: flags win over the config file, which wins over the defaults.
#[derive(Debug)]
struct Resolved {
    service: ServiceConfig,
    api: SocketAddr,
    api_config: feral_memory::api::ApiConfig,
    /// The drift bound, milliseconds.
    drift_ms_max: u64,
}

/// Flags win over the config file, which wins over the defaults.
fn resolve(data: &Path, flags: RunFlags) -> Result<Resolved, Failure> {
    let file = read_config(data, flags.config.as_deref())?;
    let defaults = ([0, 0, 0, 0], 7411).into();
    let mut static_peers = feral_transport::discovery::parse_static_peers(&file.peers.join(","));
    if let Some(list) = &flags.peers {
        static_peers.extend(feral_transport::discovery::parse_static_peers(list));
    }
    let config = ServiceConfig {
        listen: flags.listen.or(file.listen).unwrap_or(defaults),
        sync_interval: std::time::Duration::from_secs(
            flags.sync_interval.or(file.sync_interval_secs).unwrap_or(30).max(1),
        ),
        mdns: !flags.no_mdns && file.mdns.unwrap_or(true),
        static_peers,
        timeouts: timeouts(&file),
        scrub: Scrub {
            bytes_per_sec: flags
                .scrub_rate
                .or(file.scrub_bytes_per_sec)
                .unwrap_or(feral_memory::service::SCRUB_BYTES_PER_SEC),
            every: std::time::Duration::from_secs(
                flags
                    .scrub_every
                    .or(file.scrub_every_secs)
                    .unwrap_or(feral_memory::service::SCRUB_EVERY.as_secs()),
            ),
        },
    };
    let api = flags.api.or(file.api).unwrap_or(([127, 0, 0, 1], 7412).into());
    let drift_ms_max = file
        .max_drift_secs
        .map_or(feral_log::limits::HLC_DRIFT_MS_MAX_DEFAULT, |s| s.saturating_mul(1000));
    Ok(Resolved { service: config, api, api_config: api_config(&file)?, drift_ms_max })
}

/// `feral-node run`: serves sync and the HTTP API (loopback TCP with the token, and the Unix
/// socket in the data directory), discovers peers and syncs on schedule, until SIGINT/SIGTERM.
pub(crate) fn run(data: &Path, flags: RunFlags) -> Outcome {
    let resolved = resolve(data, flags)?;
    refuse_shared(data)?;
    first_run(data)?;
    refuse_shared_local_ca()?;
    let mut store_config = crate::config();
    store_config.drift_ms_max = resolved.drift_ms_max;
    let node = Arc::new(crate::open_with(data, store_config)?);
    let creds = credentials(&node)?;
    let token = feral_memory::api::token_for(data)?;
    raise_descriptor_limit();
    let rt = runtime()?;
    rt.block_on(serve_until_signal(data, &node, &creds, resolved, token))?;
    drop(rt);
    match Arc::try_unwrap(node) {
        Ok(node) => node.close()?,
        Err(_) => return Err(fail(1, "a sync task still holds the store")),
    }
    eprintln!("feral-node: stopped");
    Ok(0)
}

/// The body of `run` on the runtime.
async fn serve_until_signal(
    data: &Path,
    node: &Arc<Node>,
    creds: &Credentials,
    resolved: Resolved,
    token: String,
) -> Result<(), Failure> {
    use feral_memory::api::{Listener, serve::serve};
    let service =
        Arc::new(Service::start(node.clone(), creds, resolved.service).map_err(transport)?);
    let api_addr = resolved.api;
    let tcp = tokio::net::TcpListener::bind(api_addr)
        .await
        .map_err(|e| fail(1, format!("api {api_addr}: {e}")))?;
    let api_at = tcp.local_addr().map_err(|e| fail(1, e.to_string()))?;
    let socket_path = data.join(feral_memory::api::SOCKET_FILE);
    let unix = feral_memory::api::bind_socket(&socket_path);
    if let Err(e) = &unix {
        eprintln!(
            "feral-node: warning: the API socket {} could not be bound ({e}); the API is on TCP only",
            socket_path.display()
        );
    }
    let (tcp_router, unix_router) =
        feral_memory::api::routers(service.clone(), &resolved.api_config, token);
    let limits = resolved.api_config.limits;
    let (stop_api, api_stopped) = tokio::sync::watch::channel(false);
    let mut api = tokio::task::JoinSet::new();
    api.spawn(serve(Listener::Tcp(tcp), tcp_router, limits, api_stopped.clone()));
    if let Ok(unix) = unix {
        api.spawn(serve(Listener::Unix(unix), unix_router, limits, api_stopped));
    }
    // Store commands run while the node does go through this API.
    let local: SocketAddr = if api_at.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), api_at.port())
    } else {
        api_at
    };
    let addr_file = data.join(crate::cli_remote::API_ADDR_FILE);
    if let Err(e) = feral_log::private::write_atomic(&addr_file, local.to_string().as_bytes()) {
        eprintln!("feral-node: warning: {}: {e}", addr_file.display());
    }
    let stop_signal = shutdown_signal()?;
    // Whoever started us may stop reading stdout; a closed pipe must not stop the node.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {} (node id {})", service.local_addr(), node.node_id());
    let _ = writeln!(
        out,
        "api on http://{api_at} (bearer token in api.token) and unix:{}",
        socket_path.display()
    );
    let _ = out.flush();
    stop_signal.await;
    eprintln!("feral-node: stopping");
    let _ = stop_api.send(true);
    while api.join_next().await.is_some() {}
    let _ = std::fs::remove_file(&addr_file);
    let _ = std::fs::remove_file(&socket_path);
    service.stop().await;
    Ok(())
}

/// Raises the soft limit on open descriptors to the hard one: the API's connection caps,
/// sync connections and the store's files all need descriptors.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// How long the one-shot sync lets its close frame leave before the process exits.
const CLOSE_FLUSH: std::time::Duration = std::time::Duration::from_millis(5);

/// `feral-node sync --peer ADDR:PORT`: one session; prints the result object.
pub(crate) fn sync(data: &Path, peer: SocketAddr, json: bool) -> Outcome {
    let node = Arc::new(open(data)?);
    let creds = credentials(&node)?;
    let rt = runtime()?;
    let bind: SocketAddr = if peer.is_ipv6() { "[::]:0".parse() } else { "0.0.0.0:0".parse() }
        .map_err(|e| fail(1, format!("{e}")))?;
    let result = rt.block_on(async {
        let syncer = Syncer {
            host: node.clone(),
            endpoint: client_endpoint(&creds, bind, true).map_err(transport)?,
            cluster_id: creds.cluster_id(),
            locks: Arc::new(PeerLocks::default()),
            options: SyncOptions::default(),
        };
        let what = format!("syncing with {peer}");
        let progress = crate::progress::Spinner::start(what.clone());
        let (start_lsn, started) = (node.wal().durable_lsn(), std::time::Instant::now());
        let result = {
            let work = syncer.sync_with_peer(peer);
            tokio::pin!(work);
            loop {
                tokio::select! {
                    result = &mut work => break result,
                    () = tokio::time::sleep(crate::progress::TICK) => {
                        let received = node.wal().durable_lsn().saturating_sub(start_lsn);
                        let rate = received as f64 / started.elapsed().as_secs_f64().max(1e-3);
                        progress.message(format!("{what}: {received} ops received, {rate:.0}/s"));
                    }
                }
            }
        };
        progress.finish();
        // The session closed its connection; its close frame goes out on the endpoint's next
        // turn. Give it that, not the whole drain (three probe timeouts, about 80 ms here):
        // the peer knows the session is over from the close frame.
        let _ = tokio::time::timeout(CLOSE_FLUSH, syncer.endpoint.wait_idle()).await;
        Ok::<_, Failure>(result)
    })?;
    drop(rt);
    if json {
        print_json(&result, false)?;
    } else if result.success {
        out!("synced with {}: sent {}, received {}", result.peer, result.sent, result.received);
    } else {
        print_json(&result, true)?;
    }
    if let Ok(node) = Arc::try_unwrap(node) {
        node.close()?;
    }
    Ok(match result.error.as_deref() {
        None => 0,
        Some("disk_full") => crate::EXIT_DISK_FULL,
        Some(_) => 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> RunFlags {
        RunFlags {
            listen: None,
            sync_interval: None,
            no_mdns: false,
            peers: None,
            api: None,
            config: None,
            scrub_rate: None,
            scrub_every: None,
        }
    }

    #[test]
    fn flags_win_over_the_config_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = resolve(dir.path(), flags()).map_err(|f| f.message).expect("defaults");
        let (config, api) = (r.service, r.api);
        assert_eq!(config.listen, "0.0.0.0:7411".parse().expect("addr"));
        assert_eq!(api, "127.0.0.1:7412".parse().expect("addr"));
        assert!(config.mdns && config.static_peers.is_empty());
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "listen = \"127.0.0.1:9000\"\nsync_interval_secs = 5\nmdns = false\npeers = [\"127.0.0.1:9001\", \"bad\"]\n",
        )
        .expect("write");
        let config = resolve(dir.path(), flags()).map_err(|f| f.message).expect("file").service;
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.sync_interval.as_secs(), 5);
        assert!(!config.mdns);
        assert_eq!(config.timeouts, Timeouts::default());
        assert_eq!(
            config.static_peers,
            ["127.0.0.1:9001".parse().expect("addr")],
            "bad entry skipped"
        );
        let mut f = flags();
        f.listen = Some("127.0.0.1:9100".parse().expect("addr"));
        f.peers = Some("127.0.0.1:9002".into());
        let config = resolve(dir.path(), f).map_err(|f| f.message).expect("flags").service;
        assert_eq!(config.listen.port(), 9100);
        assert_eq!(config.static_peers.len(), 2);
        std::fs::write(dir.path().join(CONFIG_FILE), "lisen = \"x\"\n").expect("write");
        let err = resolve(dir.path(), flags()).expect_err("a typo is refused");
        assert_eq!(err.status, 2);
        assert!(err.message.contains("lisen"), "{}", err.message);
    }
}
