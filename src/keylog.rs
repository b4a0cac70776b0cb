//! `ESPGATE_KEYLOG=/path`: a debugging aid like SSLKEYLOGFILE.
//!
//! When the variable is set, every ESP SA the control plane installs is
//! appended to that file as one line
//!
//! ```text
//! spi=0x1a2b3c4d dir=in suite=aes256-sha256 encr=HEX integ=HEX
//! ```
//!
//! so a capture can be decrypted (tshark, scapy) or the keys compared with
//! a peer's (the strongSwan interop test does). It writes secret keys in
//! clear: never set it on a production gateway. Without the variable
//! nothing is written and nothing is opened.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;

use espgate_dataplane::api::{ControlMsg, Direction, SaParams};
use zeroize::Zeroizing;

use crate::config::EspProposal;

pub const ENV: &str = "ESPGATE_KEYLOG";

pub struct KeyLog {
    file: File,
}

impl KeyLog {
    /// The key log named by `ESPGATE_KEYLOG`, if set; a file that cannot be
    /// opened is reported once on stderr and logging stays off.
    pub fn from_env() -> Option<KeyLog> {
        let path = std::env::var_os(ENV)?;
        match OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => {
                eprintln!(
                    "espgate: {ENV} set: writing ESP keys in clear to {}",
                    std::path::Path::new(&path).display()
                );
                Some(KeyLog { file })
            }
            Err(e) => {
                eprintln!(
                    "espgate: {ENV}={}: cannot open: {e}",
                    std::path::Path::new(&path).display()
                );
                None
            }
        }
    }

    /// Logs the SA a control message installs, if it installs one.
    pub fn record(&mut self, msg: &ControlMsg) {
        let sa = match msg {
            ControlMsg::InstallSa(sa) => sa,
            ControlMsg::RekeySa { new, .. } => new,
            ControlMsg::InstallSaAfterPeer { outbound, .. } => outbound,
            _ => return,
        };
        let line = line(sa);
        // One write per line, file opened O_APPEND: lines never interleave.
        let _ = self.file.write_all(line.as_bytes());
    }
}

fn line(sa: &SaParams) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(200));
    let dir = match sa.dir {
        Direction::Inbound => "in",
        Direction::Outbound => "out",
    };
    let _ = write!(
        s,
        "spi={} dir={dir} suite={} encr=",
        sa.spi,
        EspProposal(sa.suite)
    );
    for b in &sa.keys.encr {
        let _ = write!(s, "{b:02x}");
    }
    s.push_str(" integ=");
    for b in &sa.keys.integ {
        let _ = write!(s, "{b:02x}");
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use espgate_dataplane::api::{Lifetime, RuleId, SaKeys, Selector, Spi, Suite, TunnelEnds};

    #[test]
    fn line_format() {
        let sa = SaParams {
            spi: Spi(0x1a2b3c4d),
            dir: Direction::Inbound,
            suite: Suite::Aes256CbcHmacSha256,
            keys: SaKeys {
                encr: vec![0xab; 2],
                integ: vec![0x01, 0xff],
            },
            tunnel: TunnelEnds {
                local: "10.0.0.1".parse().unwrap(),
                remote: "10.0.0.2".parse().unwrap(),
                udp_encap: None,
            },
            selector: Selector::between(
                "192.168.100.0/24".parse().unwrap(),
                "172.16.10.0/24".parse().unwrap(),
            ),
            esn: false,
            replay_window: 64,
            lifetime: Lifetime::default(),
            rule: RuleId(0),
            child_id: 1,
            resource: None,
            more_selectors: Vec::new(),
        };
        assert_eq!(
            line(&sa).as_str(),
            "spi=0x1a2b3c4d dir=in suite=aes256-sha256 encr=abab integ=01ff\n"
        );
    }
}
