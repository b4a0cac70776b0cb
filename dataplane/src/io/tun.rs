//! A TUN device for the cleartext LAN side (IFF_TUN | IFF_NO_PI, so each
//! read/write is exactly one IP packet).
//!
//! The TUN API has no batch call: rx is one nonblocking `read()` per packet,
//! until the burst is full or the device is empty, and tx is one `write()`
//! per packet. That is a syscall per packet by design of the kernel
//! interface; use `af_xdp` where that matters. Needs CAP_NET_ADMIN.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use super::{IoError, IoStats, PacketIo};
use crate::buf::{Burst, Pool, PortId, FRAME_SIZE, HEADROOM};

/// `_IOW('T', 202, int)` from <linux/if_tun.h>.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags (the
/// rest of the union is padding).
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

pub struct TunPort {
    file: File,
    name: String,
    port: PortId,
    stats: IoStats,
}

impl TunPort {
    /// Opens (creating if needed) the TUN device `name`, nonblocking.
    /// The caller (or `ip`) assigns addresses and brings it up.
    pub fn open(name: &str, port: PortId) -> Result<TunPort, IoError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(IoError::Setup(format!(
                "TUN name {name:?}: 1 to {} bytes expected",
                libc::IFNAMSIZ - 1
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|source| IoError::Os {
                what: "opening /dev/net/tun".into(),
                source,
            })?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TUN | IFF_NO_PI,
            _pad: [0; 22],
        };
        for (d, s) in req.name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: `req` is a valid, initialized ifreq-layout struct that
        // outlives the call; TUNSETIFF reads and writes only within it.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if rc < 0 {
            return Err(IoError::Os {
                what: format!("TUNSETIFF {name} (needs CAP_NET_ADMIN)"),
                source: std::io::Error::last_os_error(),
            });
        }
        let len = req.name.iter().position(|&c| c == 0).unwrap_or(0);
        let name = req.name[..len].iter().map(|&c| c as u8 as char).collect();
        Ok(TunPort {
            file,
            name,
            port,
            stats: IoStats::default(),
        })
    }

    /// The device name the kernel gave (same as asked unless it had a `%d`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl PacketIo for TunPort {
    fn rx_burst(&mut self, pool: &mut Pool, burst: &mut Burst) -> Result<usize, IoError> {
        let mut n = 0;
        while burst.room() > 0 {
            let Some(mut frame) = pool.get() else {
                break;
            };
            let res = {
                let (buf, _, _) = frame.raw_mut();
                self.file.read(&mut buf[HEADROOM..FRAME_SIZE])
            };
            match res {
                Ok(len) if len > 0 => {
                    frame.set_bounds(HEADROOM, len);
                    frame.port = self.port;
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += len as u64;
                    if let Err(f) = burst.push(frame) {
                        pool.put(f);
                        break;
                    }
                    n += 1;
                }
                Ok(_) => {
                    pool.put(frame);
                    break;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    pool.put(frame);
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => pool.put(frame),
                Err(source) => {
                    pool.put(frame);
                    return Err(IoError::Os {
                        what: format!("reading TUN {}", self.name),
                        source,
                    });
                }
            }
        }
        Ok(n)
    }

    fn tx_burst(&mut self, pool: &mut Pool, burst: &mut Burst) -> Result<usize, IoError> {
        let mut sent = 0;
        for frame in burst.drain() {
            // A write error on one packet (bad header, device down, queue
            // full) must not stop the rest: count it and go on.
            match self.file.write(frame.data()) {
                Ok(w) if w == frame.len() => {
                    sent += 1;
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += w as u64;
                }
                _ => self.stats.tx_dropped += 1,
            }
            pool.put(frame);
        }
        Ok(sent)
    }

    fn stats(&self) -> IoStats {
        self.stats
    }
}
