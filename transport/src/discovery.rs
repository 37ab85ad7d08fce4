//! Finding peers: mDNS (`_feral._udp.local.`, TXT `node_id`, `version`, `port`) and a static
//! list (`FERAL_SYNC_PEERS`, `host:port,...`). Discovery never fails the node: if mDNS cannot
//! start, the static list is all there is, with a warning (SPEC 6).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use serde::Serialize;

use crate::limits::{DISCOVERED_PEERS_MAX, MANUAL_PEERS_MAX};

/// The mDNS service type nodes advertise.
pub const SERVICE_TYPE: &str = "_feral._udp.local.";

/// Where a peer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PeerSource {
    /// Found by mDNS.
    Mdns,
    /// From `FERAL_SYNC_PEERS` or the config file.
    Static,
    /// Named in a sync request.
    Manual,
}

/// One known peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerInfo {
    /// Its QUIC address.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub addr: SocketAddr,
    /// Its node id, when known (mDNS TXT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Where it came from.
    pub source: PeerSource,
}

/// The peers a node knows, by address. mDNS and manual entries are capped
/// ([`DISCOVERED_PEERS_MAX`], [`MANUAL_PEERS_MAX`]); static ones are what the operator listed.
#[derive(Debug, Default)]
pub struct PeerBook {
    peers: Mutex<BTreeMap<SocketAddr, (PeerInfo, Option<String>)>>,
    refused: AtomicU64,
}

/// The book's counters, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BookCounters {
    /// mDNS peers refused: past the cap, or dropped because their certificate proved another
    /// node id than they advertised.
    pub refused: u64,
}

/// A peer could not be added: the book holds as many of its kind as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this node already knows {max} {kind:?} peers (the cap); a peer is forgotten after failed syncs"
)]
pub struct BookFull {
    /// The cap.
    pub max: usize,
    /// The kind of peer.
    pub kind: PeerSource,
}

impl PeerBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SocketAddr, (PeerInfo, Option<String>)>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or refreshes a peer. A static or manual entry is not replaced by an mDNS one.
    /// Manual and mDNS peers beyond their cap are refused.
    pub fn add(&self, info: PeerInfo) -> Result<(), BookFull> {
        self.add_named(info, None)
    }

    fn add_named(&self, info: PeerInfo, mdns_name: Option<String>) -> Result<(), BookFull> {
        let mut peers = self.lock();
        match peers.get(&info.addr) {
            Some((held, _))
                if held.source != PeerSource::Mdns && info.source == PeerSource::Mdns => {}
            Some(_) => {
                peers.insert(info.addr, (info, mdns_name));
            }
            None => {
                let max = match info.source {
                    PeerSource::Static => usize::MAX,
                    PeerSource::Mdns => DISCOVERED_PEERS_MAX,
                    PeerSource::Manual => MANUAL_PEERS_MAX,
                };
                let held = peers.values().filter(|(p, _)| p.source == info.source).count();
                if held >= max {
                    if info.source == PeerSource::Mdns {
                        self.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    return Err(BookFull { max, kind: info.source });
                }
                peers.insert(info.addr, (info, mdns_name));
            }
        }
        Ok(())
    }

    /// Forgets a discovered or manual peer (failed too often, or not the node it advertised);
    /// `refused` counts it as refused. Static peers stay: the operator listed them.
    pub fn forget(&self, addr: SocketAddr, refused: bool) -> bool {
        let mut peers = self.lock();
        let removable = peers.get(&addr).is_some_and(|(p, _)| p.source != PeerSource::Static);
        if removable {
            peers.remove(&addr);
            if refused {
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        removable
    }

    /// The peer at `addr`, if known.
    pub fn get(&self, addr: SocketAddr) -> Option<PeerInfo> {
        self.lock().get(&addr).map(|(info, _)| info.clone())
    }

    /// The book's counters.
    pub fn counters(&self) -> BookCounters {
        BookCounters { refused: self.refused.load(Ordering::Relaxed) }
    }

    /// Forgets the mDNS peers advertised under `fullname` (they left).
    fn remove_mdns(&self, fullname: &str) {
        self.lock().retain(|_, (info, name)| {
            !(info.source == PeerSource::Mdns && name.as_deref() == Some(fullname))
        });
    }

    /// Every known peer, by address.
    pub fn list(&self) -> Vec<PeerInfo> {
        self.lock().values().map(|(info, _)| info.clone()).collect()
    }
}

/// Parses `host:port,host:port`. Bad entries are warned about and skipped, never fatal.
pub fn parse_static_peers(list: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.to_socket_addrs().map(|mut addrs| addrs.next()) {
            Ok(Some(addr)) => out.push(addr),
            Ok(None) => tracing::warn!(entry, "static peer resolves to no address; skipped"),
            Err(e) => tracing::warn!(entry, error = %e, "static peer is not host:port; skipped"),
        }
    }
    out
}

/// Adds static peers to the book.
pub fn add_static(book: &PeerBook, peers: &[SocketAddr]) {
    for addr in peers {
        let _ = book.add(PeerInfo { addr: *addr, node_id: None, source: PeerSource::Static });
    }
}

/// The mDNS side: an advertisement of this node and a browser feeding the book.
pub struct Discovery {
    daemon: Option<ServiceDaemon>,
    fullname: Option<String>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Discovery {{ running: {}, advertised: {:?} }}",
            self.daemon.is_some(),
            self.fullname
        )
    }
}

impl Discovery {
    /// A discovery that does nothing (mDNS disabled).
    pub fn disabled() -> Discovery {
        Discovery { daemon: None, fullname: None }
    }

    /// Advertises this node and browses for others. Never fails: an mDNS error is logged and
    /// the node goes on with its static peers.
    pub fn start(book: Arc<PeerBook>, node_id: &str, port: u16, version: &str) -> Discovery {
        match Self::try_start(book, node_id, port, version) {
            Ok(discovery) => discovery,
            Err(e) => {
                tracing::warn!(error = %e, "mDNS could not start; using the static peer list");
                Discovery::disabled()
            }
        }
    }

    fn try_start(
        book: Arc<PeerBook>,
        node_id: &str,
        port: u16,
        version: &str,
    ) -> Result<Discovery, mdns_sd::Error> {
        let daemon = ServiceDaemon::new()?;
        let port_text = port.to_string();
        let properties = [("node_id", node_id), ("version", version), ("port", port_text.as_str())];
        let host = format!("feral-{node_id}.local.");
        let info = ServiceInfo::new(SERVICE_TYPE, node_id, &host, "", port, &properties[..])?
            .enable_addr_auto();
        let fullname = info.get_fullname().to_string();
        daemon.register(info)?;
        let events = daemon.browse(SERVICE_TYPE)?;
        let own = node_id.to_string();
        std::thread::Builder::new()
            .name("feral-mdns".into())
            .spawn(move || {
                // Ends when the daemon shuts down and closes the channel.
                while let Ok(event) = events.recv() {
                    apply_event(&book, &own, event);
                }
            })
            .map_err(|e| mdns_sd::Error::Msg(e.to_string()))?;
        Ok(Discovery { daemon: Some(daemon), fullname: Some(fullname) })
    }

    /// True when mDNS runs.
    pub fn is_running(&self) -> bool {
        self.daemon.is_some()
    }

    /// Withdraws the advertisement and stops the daemon.
    pub fn shutdown(self) {
        if let Some(daemon) = self.daemon {
            if let Some(name) = &self.fullname
                && let Ok(done) = daemon.unregister(name)
            {
                let _ = done.recv_timeout(std::time::Duration::from_secs(1));
            }
            let _ = daemon.shutdown();
        }
    }
}

fn apply_event(book: &PeerBook, own: &str, event: ServiceEvent) {
    match event {
        ServiceEvent::ServiceResolved(service) => {
            let node_id = service.get_property_val_str("node_id").map(str::to_string);
            if node_id.as_deref() == Some(own) {
                return; // our own advertisement
            }
            for ip in service.get_addresses_v4() {
                let addr = SocketAddr::new(ip.into(), service.port);
                let info = PeerInfo { addr, node_id: node_id.clone(), source: PeerSource::Mdns };
                match book.add_named(info, Some(service.fullname.clone())) {
                    Ok(()) => tracing::info!(%addr, node_id = ?node_id, "peer found by mDNS"),
                    Err(e) => tracing::warn!(%addr, error = %e, "mDNS peer refused"),
                }
            }
        }
        ServiceEvent::ServiceRemoved(_, fullname) => {
            tracing::info!(%fullname, "peer left");
            book.remove_mdns(&fullname);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_peers_skip_bad_entries() {
        let peers =
            parse_static_peers("127.0.0.1:7411, nonsense, :99, 127.0.0.1:notaport,,[::1]:7412");
        assert_eq!(
            peers,
            ["127.0.0.1:7411".parse().expect("addr"), "[::1]:7412".parse().expect("addr")]
        );
    }

    #[test]
    fn a_static_entry_is_not_replaced_by_mdns() {
        let book = PeerBook::default();
        let addr: SocketAddr = "10.0.0.1:7411".parse().expect("addr");
        add_static(&book, &[addr]);
        book.add_named(
            PeerInfo { addr, node_id: Some("x".into()), source: PeerSource::Mdns },
            Some("x._feral._udp.local.".into()),
        )
        .expect("room");
        assert_eq!(book.list()[0].source, PeerSource::Static);
        book.remove_mdns("x._feral._udp.local.");
        assert_eq!(book.list().len(), 1);
    }

    #[test]
    fn discovered_and_manual_peers_are_capped_and_forgettable() {
        let book = PeerBook::default();
        let peer = |i: usize, source| PeerInfo {
            addr: SocketAddr::from(([10, 0, (i / 256) as u8, (i % 256) as u8], 7411)),
            node_id: None,
            source,
        };
        for i in 0..DISCOVERED_PEERS_MAX {
            book.add_named(peer(i, PeerSource::Mdns), Some(format!("n{i}"))).expect("room");
        }
        let full = book.add_named(peer(9999, PeerSource::Mdns), None).expect_err("capped");
        assert_eq!(full.max, DISCOVERED_PEERS_MAX);
        assert_eq!(book.counters().refused, 1);
        for i in 0..MANUAL_PEERS_MAX {
            book.add(peer(1000 + i, PeerSource::Manual)).expect("room");
        }
        assert!(book.add(peer(5000, PeerSource::Manual)).is_err());
        assert!(book.forget(peer(1000, PeerSource::Manual).addr, false));
        book.add(peer(5000, PeerSource::Manual)).expect("room again");
        add_static(&book, &[peer(7000, PeerSource::Static).addr]);
        assert!(!book.forget(peer(7000, PeerSource::Static).addr, false), "static peers stay");
        assert!(book.forget(peer(0, PeerSource::Mdns).addr, true));
        assert_eq!(book.counters().refused, 2);
    }
}
