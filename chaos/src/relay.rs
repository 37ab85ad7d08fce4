//! A lossy UDP relay for the partition scenario: it stands in front of a node's QUIC port,
//! keeps one upstream socket per client address (so replies find their way back), and on the
//! way through drops packets (seeded), delays some so they arrive out of order, and drops
//! everything while partitioned.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::Rng;

/// The largest datagram relayed.
const DATAGRAM_BYTES_MAX: usize = 65_536;
/// How often the relay's threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// What the network does to packets; shared by every relay of a run.
#[derive(Debug)]
pub struct Impairment {
    /// Probability a packet is dropped.
    pub loss: f64,
    /// Probability a packet is held back (2–20 ms) so later ones overtake it.
    pub reorder: f64,
    /// Everything is dropped while set.
    pub partitioned: AtomicBool,
    rng: Mutex<Rng>,
    /// Packets seen.
    pub packets: AtomicU64,
    /// Packets dropped (loss or partition).
    pub dropped: AtomicU64,
    /// Packets delayed past later ones.
    pub reordered: AtomicU64,
}

enum Fate {
    Drop,
    Now,
    Later(Duration),
}

impl Impairment {
    /// An impairment with seeded choices.
    pub fn new(loss: f64, reorder: f64, seed: u64) -> Impairment {
        Impairment {
            loss,
            reorder,
            partitioned: AtomicBool::new(false),
            rng: Mutex::new(Rng::new(seed)),
            packets: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
        }
    }

    fn fate(&self) -> Fate {
        self.packets.fetch_add(1, Ordering::Relaxed);
        if self.partitioned.load(Ordering::Relaxed) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Fate::Drop;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        if rng.chance(self.loss) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            Fate::Drop
        } else if rng.chance(self.reorder) {
            self.reordered.fetch_add(1, Ordering::Relaxed);
            Fate::Later(Duration::from_millis(rng.range(2, 20)))
        } else {
            Fate::Now
        }
    }
}

/// A packet held back: when, through which socket, to whom (None: the socket's peer).
type Held = (Instant, Arc<UdpSocket>, Option<SocketAddr>, Vec<u8>);

/// One relay: packets to `addr` reach the target, and its answers come back.
#[derive(Debug)]
pub struct Relay {
    /// Where clients send.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn send(
    fate: Fate,
    later: &Sender<Held>,
    socket: &Arc<UdpSocket>,
    to: Option<SocketAddr>,
    bytes: &[u8],
) {
    match fate {
        Fate::Drop => {}
        Fate::Now => {
            let _ = match to {
                Some(to) => socket.send_to(bytes, to),
                None => socket.send(bytes),
            };
        }
        Fate::Later(delay) => {
            let _ = later.send((Instant::now() + delay, socket.clone(), to, bytes.to_vec()));
        }
    }
}

/// Sends held packets when they are due.
fn delayer(rx: Receiver<Held>, stop: Arc<AtomicBool>) {
    let mut held: Vec<Held> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let next = held.iter().map(|h| h.0).min();
        let wait = next.map_or(POLL, |due| due.saturating_duration_since(Instant::now()).min(POLL));
        match rx.recv_timeout(wait) {
            Ok(h) => held.push(h),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let (due, keep): (Vec<Held>, Vec<Held>) = held.drain(..).partition(|h| h.0 <= now);
        held = keep;
        for (_, socket, to, bytes) in due {
            let _ = match to {
                Some(to) => socket.send_to(&bytes, to),
                None => socket.send(&bytes),
            };
        }
    }
}

impl Relay {
    /// Starts relaying from a fresh loopback port to `target`.
    pub fn start(target: SocketAddr, net: Arc<Impairment>) -> Result<Relay> {
        let listen = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
        listen.set_read_timeout(Some(POLL))?;
        let addr = listen.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (later, held) = mpsc::channel::<Held>();
        let mut threads = Vec::new();
        let s = stop.clone();
        threads.push(std::thread::spawn(move || delayer(held, s)));
        let s = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut upstream: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, client)) = listen.recv_from(&mut buf) else { continue };
                let up = match upstream.get(&client) {
                    Some(up) => up.clone(),
                    None => {
                        let Ok(up) = UdpSocket::bind("127.0.0.1:0") else { continue };
                        if up.connect(target).is_err() || up.set_read_timeout(Some(POLL)).is_err() {
                            continue;
                        }
                        let up = Arc::new(up);
                        upstream.insert(client, up.clone());
                        // Answers from the target go back to this client.
                        let (up2, back, later2, net2, s2) =
                            (up.clone(), listen.clone(), later.clone(), net.clone(), s.clone());
                        std::thread::spawn(move || {
                            let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
                            while !s2.load(Ordering::Relaxed) {
                                if let Ok(n) = up2.recv(&mut buf) {
                                    send(net2.fate(), &later2, &back, Some(client), &buf[..n]);
                                }
                            }
                        });
                        up
                    }
                };
                send(net.fate(), &later, &up, None, &buf[..n]);
            }
        }));
        Ok(Relay { addr, stop, threads })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
