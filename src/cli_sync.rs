//! `feral-node certs …`, `run` and `sync`: certificates, serving sync, one sync session.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Subcommand;
use feral_memory::Node;
use feral_memory::service::{Service, ServiceConfig};
use feral_transport::driver::{Timeouts, client_endpoint};
use feral_transport::tls::{CA_CERT_FILE, Ca, Credentials, NODE_CERT_FILE};
use feral_transport::{PeerLocks, SyncOptions, Syncer};

use crate::{Failure, Outcome, fail, open, print_json};

/// `feral-node certs …`.
#[derive(Debug, Subcommand)]
pub(crate) enum Certs {
    /// Create a cluster CA (ca.pem, ca.key) in a directory kept off the nodes.
    NewCa {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue this node a certificate for its own key, and install the CA certificate.
    Issue {
        /// The CA directory.
        #[arg(long)]
        ca: PathBuf,
    },
    /// Issue a fresh certificate for the same key (the node id stays the same).
    Renew {
        /// The CA directory.
        #[arg(long)]
        ca: PathBuf,
    },
}

fn transport(e: feral_transport::TransportError) -> Failure {
    fail(1, e.to_string())
}

pub(crate) fn certs(command: Certs, data: &Path) -> Outcome {
    match command {
        Certs::NewCa { out } => {
            let ca = Ca::generate().map_err(transport)?;
            ca.save(&out).map_err(transport)?;
            let id: String =
                ca.cluster_id().map_err(transport)?.iter().map(|b| format!("{b:02x}")).collect();
            println!(
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
            println!("issued a certificate for node {} into {}", node.node_id(), data.display());
            node.close()?;
            Ok(0)
        }
    }
}

fn write(path: &Path, text: &str) -> Result<(), Failure> {
    std::fs::write(path, text).map_err(|e| fail(1, format!("{}: {e}", path.display())))
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

/// Waits for SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// On a fresh machine: the store, and a local CA (kept in `<data>/local-ca`) with a
/// certificate for this node, so `run` works with no set-up. A cluster of several machines
/// issues from one CA instead (`certs new-ca`, `certs issue`).
fn first_run(data: &Path) -> Result<(), Failure> {
    if !data.join(feral_log::wal::ORIGIN_FILE).exists() {
        Node::open(data, feral_log::Config::default())?.close()?;
        eprintln!("feral-node: created a store in {}", data.display());
    }
    if !data.join(NODE_CERT_FILE).exists() {
        let ca_dir = data.join("local-ca");
        let ca = match Ca::load(&ca_dir) {
            Ok(ca) => ca,
            Err(_) => {
                let ca = Ca::generate().map_err(transport)?;
                ca.save(&ca_dir).map_err(transport)?;
                ca
            }
        };
        let node = open(data)?;
        write(&data.join(NODE_CERT_FILE), &ca.issue_default(node.key()).map_err(transport)?)?;
        write(&data.join(CA_CERT_FILE), &ca.cert_pem)?;
        node.close()?;
        eprintln!(
            "feral-node: created a local CA in {} and a certificate for this node; to sync with \
             other machines, issue every node from one CA (feral-node certs --help)",
            ca_dir.display()
        );
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
}

/// The optional config file (`feral.toml`): every key optional, unknown keys refused.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    api: Option<SocketAddr>,
    sync_interval_secs: Option<u64>,
    mdns: Option<bool>,
    #[serde(default)]
    peers: Vec<String>,
    connect_timeout_ms: Option<u64>,
    handshake_timeout_ms: Option<u64>,
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
    }
}

/// Flags win over the config file, which wins over the defaults.
fn resolve(data: &Path, flags: RunFlags) -> Result<(ServiceConfig, SocketAddr), Failure> {
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
    };
    let api = flags.api.or(file.api).unwrap_or(([127, 0, 0, 1], 7412).into());
    Ok((config, api))
}

/// `feral-node run`: serves sync and the HTTP API, discovers peers and syncs on schedule,
/// until SIGINT/SIGTERM.
pub(crate) fn run(data: &Path, flags: RunFlags) -> Outcome {
    let (config, api_addr) = resolve(data, flags)?;
    first_run(data)?;
    let node = Arc::new(open(data)?);
    let creds = credentials(&node)?;
    let token = feral_memory::api::token_for(api_addr, data)?;
    let rt = runtime()?;
    rt.block_on(async {
        let service = Arc::new(Service::start(node.clone(), &creds, config).map_err(transport)?);
        let listener = tokio::net::TcpListener::bind(api_addr)
            .await
            .map_err(|e| fail(1, format!("api {api_addr}: {e}")))?;
        let api_at = listener.local_addr().map_err(|e| fail(1, e.to_string()))?;
        let needs_token = token.is_some();
        let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let router = feral_memory::api::router(service.clone(), token);
        let api = tokio::spawn(feral_memory::api::serve_api(listener, router, async {
            let _ = api_stopped.await;
        }));
        // Whoever started us may stop reading stdout; a closed pipe must not stop the node.
        let auth = if needs_token { " (bearer token in api.token)" } else { "" };
        // Store commands run while the node does go through this API.
        let local: SocketAddr = if api_at.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), api_at.port())
        } else {
            api_at
        };
        let addr_file = data.join(crate::cli_remote::API_ADDR_FILE);
        let _ = std::fs::write(&addr_file, local.to_string());
        let mut out = std::io::stdout();
        let _ = writeln!(out, "listening on {} (node id {})", service.local_addr(), node.node_id());
        let _ = writeln!(out, "api on http://{api_at}{auth}");
        let _ = out.flush();
        shutdown_signal().await;
        eprintln!("feral-node: stopping");
        let _ = stop_api.send(());
        let _ = api.await;
        let _ = std::fs::remove_file(&addr_file);
        service.stop().await;
        Ok::<(), Failure>(())
    })?;
    drop(rt);
    match Arc::try_unwrap(node) {
        Ok(node) => node.close()?,
        Err(_) => return Err(fail(1, "a sync task still holds the store")),
    }
    eprintln!("feral-node: stopped");
    Ok(0)
}

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
        let progress = crate::progress::Progress::start(format!("syncing with {peer}"));
        let start_lsn = node.wal().durable_lsn();
        let result = {
            let work = syncer.sync_with_peer(peer);
            tokio::pin!(work);
            loop {
                tokio::select! {
                    result = &mut work => break result,
                    () = tokio::time::sleep(crate::progress::TICK) => {
                        let received = node.wal().durable_lsn().saturating_sub(start_lsn);
                        progress.update(&format!("{received} ops received"));
                    }
                }
            }
        };
        progress.finish();
        syncer.endpoint.wait_idle().await;
        Ok::<_, Failure>(result)
    })?;
    drop(rt);
    if json {
        print_json(&result, false)?;
    } else if result.success {
        println!("synced with {}: sent {}, received {}", result.peer, result.sent, result.received);
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
        }
    }

    #[test]
    fn flags_win_over_the_config_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (config, api) = resolve(dir.path(), flags()).map_err(|f| f.message).expect("defaults");
        assert_eq!(config.listen, "0.0.0.0:7411".parse().expect("addr"));
        assert_eq!(api, "127.0.0.1:7412".parse().expect("addr"));
        assert!(config.mdns && config.static_peers.is_empty());
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "listen = \"127.0.0.1:9000\"\nsync_interval_secs = 5\nmdns = false\npeers = [\"127.0.0.1:9001\", \"bad\"]\n",
        )
        .expect("write");
        let (config, _) = resolve(dir.path(), flags()).map_err(|f| f.message).expect("file");
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
        let (config, _) = resolve(dir.path(), f).map_err(|f| f.message).expect("flags");
        assert_eq!(config.listen.port(), 9100);
        assert_eq!(config.static_peers.len(), 2);
        std::fs::write(dir.path().join(CONFIG_FILE), "lisen = \"x\"\n").expect("write");
        let err = resolve(dir.path(), flags()).expect_err("a typo is refused");
        assert_eq!(err.status, 2);
        assert!(err.message.contains("lisen"), "{}", err.message);
    }
}
