//! Starts the workers on their cores and gives the control side one handle
//! to them: routed control messages, events, snapshots, IKE punt/inject.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, Receiver, Sender};
use crossbeam::queue::ArrayQueue;

use crate::api::{ControlMsg, DataplaneEvent, Direction, SaParams};
use crate::buf::Pool;
use crate::io::PacketIo;
use crate::spd::Spd;
use crate::worker::{
    outbound_owner, Handoff, Query, Worker, WorkerConfig, WorkerLinks, WorkerSnapshot,
};

/// Depth of the queues between control plane and workers. Control traffic
/// is tiny; the depth only has to absorb a burst of installs.
const CTRL_DEPTH: usize = 1024;
const EVENT_DEPTH: usize = 4096;
const PUNT_DEPTH: usize = 1024;
const HANDOFF_DEPTH: usize = 1024;

/// One worker to start: its settings, its two ports and (optionally) the
/// core to pin it to.
pub struct WorkerSpec {
    pub cfg: WorkerConfig,
    pub lan: Box<dyn PacketIo>,
    pub wan: Box<dyn PacketIo>,
    pub core: Option<usize>,
}

/// The running dataplane.
pub struct Dataplane {
    ctrl: Vec<Sender<ControlMsg>>,
    query: Vec<Sender<Query>>,
    events: Receiver<DataplaneEvent>,
    punt: Receiver<Vec<u8>>,
    inject: Sender<Vec<u8>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Dataplane {
    /// Starts one thread per spec (pinned with `core_affinity` when a core
    /// is given), all sharing `spd` as their first SPD snapshot.
    pub fn spawn(specs: Vec<WorkerSpec>, spd: Arc<Spd>) -> Dataplane {
        let workers = specs.len().max(1) as u8;
        let handoff = Arc::new(Handoff::new(workers, HANDOFF_DEPTH));
        let frames_total: usize = specs.iter().map(|s| s.cfg.pool_frames).sum();
        let overflow = Arc::new(ArrayQueue::new(frames_total.max(1)));
        let (ev_tx, events) = bounded(EVENT_DEPTH);
        let (punt_tx, punt) = bounded(PUNT_DEPTH);
        let (inject, inject_rx) = bounded(PUNT_DEPTH);
        let stop = Arc::new(AtomicBool::new(false));
        let mut ctrl = Vec::new();
        let mut query = Vec::new();
        let mut threads = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let (ctx, crx) = bounded(CTRL_DEPTH);
            let (qtx, qrx) = bounded(16);
            ctrl.push(ctx);
            query.push(qtx);
            let links = WorkerLinks {
                ctrl: crx,
                query: qrx,
                events: ev_tx.clone(),
                punt: punt_tx.clone(),
                // IKE goes out through worker 0 only, so its packets keep
                // their order.
                inject: if i == 0 {
                    inject_rx.clone()
                } else {
                    bounded(0).1
                },
                handoff: handoff.clone(),
            };
            let mut cfg = spec.cfg;
            cfg.id = i as u8;
            cfg.workers = workers;
            let pool = Pool::with_overflow(cfg.pool_frames, overflow.clone());
            let spd = spd.clone();
            let stop = stop.clone();
            let (lan, wan, core) = (spec.lan, spec.wan, spec.core);
            let t = std::thread::Builder::new()
                .name(format!("espgate-w{i}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core_affinity::CoreId { id: core });
                    }
                    let mut w = Worker::new(cfg, pool, spd, lan, wan, links);
                    let idle = w.idle_sleep();
                    while !stop.load(Ordering::Relaxed) {
                        if w.poll(Instant::now()) == 0 && !idle.is_zero() {
                            std::thread::sleep(idle);
                        }
                    }
                });
            match t {
                Ok(t) => threads.push(t),
                Err(e) => eprintln!("espgate: cannot start worker {i}: {e}"),
            }
        }
        Dataplane {
            ctrl,
            query,
            events,
            punt,
            inject,
            stop,
            threads,
        }
    }

    pub fn workers(&self) -> u8 {
        self.ctrl.len() as u8
    }

    /// Sends `msg` to the worker(s) it concerns: inbound SAs to the shard
    /// in their SPI, outbound SAs to the owner of their rule, SPD updates
    /// and acquire failures to every worker.
    pub fn send(&self, msg: ControlMsg) {
        let n = self.workers();
        let to = |w: u8| self.ctrl.get(w as usize);
        match &msg {
            ControlMsg::InstallSa(p) => {
                let w = match p.dir {
                    Direction::Inbound => p.spi.shard(),
                    Direction::Outbound => outbound_worker(p, n),
                };
                if let Some(c) = to(w) {
                    let _ = c.send(msg);
                }
            }
            ControlMsg::RekeySa { new, .. } => {
                if let Some(c) = to(outbound_worker(new, n)) {
                    let _ = c.send(msg);
                }
            }
            ControlMsg::InstallSaAfterPeer { outbound, .. } => {
                if let Some(c) = to(outbound_worker(outbound, n)) {
                    let _ = c.send(msg);
                }
            }
            ControlMsg::DeleteSa { spi, dir } => match dir {
                Direction::Inbound => {
                    if let Some(c) = to(spi.shard()) {
                        let _ = c.send(msg);
                    }
                }
                // Outbound SPIs are the peer's: we do not know the owner
                // from the SPI, so every worker looks.
                Direction::Outbound => {
                    for c in &self.ctrl {
                        let _ = c.send(ControlMsg::DeleteSa {
                            spi: *spi,
                            dir: *dir,
                        });
                    }
                }
            },
            ControlMsg::UpdateSpd(spd) => {
                for c in &self.ctrl {
                    let _ = c.send(ControlMsg::UpdateSpd(spd.clone()));
                }
            }
            ControlMsg::AcquireFailed { rule, peer } => {
                if let Some(c) = to(outbound_owner(*rule, n)) {
                    let _ = c.send(ControlMsg::AcquireFailed {
                        rule: *rule,
                        peer: *peer,
                    });
                }
            }
        }
    }

    pub fn events(&self) -> &Receiver<DataplaneEvent> {
        &self.events
    }

    /// IKE packets (whole IP packets) that arrived on a WAN port.
    pub fn punted(&self) -> &Receiver<Vec<u8>> {
        &self.punt
    }

    /// Sends an IP packet (IKE) out of the WAN port of worker 0.
    pub fn inject(&self, packet: Vec<u8>) -> bool {
        self.inject.try_send(packet).is_ok()
    }

    /// Asks every worker for its counters; waits at most `timeout` each.
    pub fn snapshot(&self, timeout: Duration) -> Vec<WorkerSnapshot> {
        let mut out = Vec::new();
        for q in &self.query {
            let (tx, rx) = bounded(1);
            if q.send(Query::Snapshot(tx)).is_ok() {
                if let Ok(s) = rx.recv_timeout(timeout) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// Stops the workers and waits for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The worker an outbound SA is installed on: its resource (RFC 9611
/// per-worker SA) if it has one, else the rule's owner.
fn outbound_worker(p: &SaParams, workers: u8) -> u8 {
    match p.resource {
        Some(w) => w % workers.max(1),
        None => outbound_owner(p.rule, workers),
    }
}
