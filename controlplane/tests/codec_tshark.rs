//! Wireshark's IKEv2 dissector (tshark) reads what we encode: every payload,
//! proposal and transform found, no malformed-packet report. Skips (printing
//! why) when tshark/text2pcap are missing, unless ESPGATE_CI=1.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Command;

use espgate_controlplane::ike::payload::*;
use espgate_controlplane::ike::{Flags, Header, Message};

fn tool_ok(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Dissects `datagram` as UDP 500 → 500; `None` (after printing why) when
/// the tools are missing and ESPGATE_CI is not set.
fn dissect(datagram: &[u8]) -> Option<String> {
    if !(tool_ok("tshark") && tool_ok("text2pcap")) {
        assert!(
            std::env::var("ESPGATE_CI").as_deref() != Ok("1"),
            "tshark/text2pcap missing"
        );
        eprintln!("skipping tshark test: tshark or text2pcap not installed");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("espgate-codec-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // text2pcap reads `od -Ax -tx1` style hex dumps.
    let mut dump = String::new();
    for (i, chunk) in datagram.chunks(16).enumerate() {
        write!(dump, "{:06x}", i * 16).unwrap();
        for b in chunk {
            write!(dump, " {b:02x}").unwrap();
        }
        dump.push('\n');
    }
    let (txt, pcap) = (dir.join("msg.txt"), dir.join("msg.pcap"));
    std::fs::write(&txt, dump).unwrap();
    let st = Command::new("text2pcap")
        .args(["-q", "-u", "500,500"])
        .arg(&txt)
        .arg(&pcap)
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("tshark")
        .args(["-n", "-V", "-r"])
        .arg(&pcap)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success());
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn message() -> Message {
    Message {
        header: Header::new(
            ExchangeType::IKE_SA_INIT,
            [0x11; 8],
            [0; 8],
            0,
            Flags::INITIATOR,
        ),
        payloads: vec![
            Payload::Sa(SaPayload {
                proposals: vec![Proposal {
                    num: 1,
                    protocol: ProtocolId::IKE,
                    spi: vec![],
                    transforms: vec![
                        Transform::new(TransformType::ENCR, TransformId::ENCR_AES_CBC)
                            .with_key_len(256),
                        Transform::new(TransformType::PRF, TransformId::PRF_HMAC_SHA2_256),
                        Transform::new(TransformType::INTEG, TransformId::AUTH_HMAC_SHA2_256_128),
                        Transform::new(TransformType::DH, TransformId::MODP_2048),
                    ],
                }],
            }),
            Payload::Ke(KePayload {
                group: 14,
                data: vec![0x33; 256],
            }),
            Payload::Nonce(Nonce(vec![0x44; 32])),
            Payload::Notify(Notify::new(
                NotifyType::NAT_DETECTION_SOURCE_IP,
                vec![1; 20],
            )),
            Payload::Notify(Notify::new(
                NotifyType::NAT_DETECTION_DESTINATION_IP,
                vec![2; 20],
            )),
            Payload::Notify(Notify::child(
                ProtocolId::ESP,
                0xc000_2002,
                NotifyType::REKEY_SA,
                vec![],
            )),
            Payload::IdI(IdPayload::from_addr(Ipv4Addr::new(198, 51, 100, 1).into())),
            Payload::TsI(TsPayload {
                selectors: vec![
                    TrafficSelector::from_net("10.1.0.0/24".parse().unwrap(), 0, 0..=65535),
                    TrafficSelector::from_net("2001:db8:1::/48".parse().unwrap(), 17, 53..=53),
                ],
            }),
            Payload::Delete(Delete::esp(&[0xc000_1001, 0xc000_1002])),
            Payload::VendorId(VendorId(b"espgate".to_vec())),
        ],
    }
}

#[test]
fn tshark_dissects_our_message() {
    let bytes = message().encode();
    let Some(text) = dissect(&bytes) else {
        return;
    };
    assert!(!text.contains("Malformed"), "{text}");
    assert!(!text.contains("[Expert Info (Error"), "{text}");
    for needle in [
        "Exchange type: IKE_SA_INIT (34)",
        "Initiator SPI: 1111111111111111",
        &format!("Length: {}", bytes.len()),
        "Transform ID (ENCR): ENCR_AES_CBC (12)",
        "Key Length: 256",
        "Transform ID (PRF): PRF_HMAC_SHA2_256 (5)",
        "Transform ID (INTEG): AUTH_HMAC_SHA2_256_128 (12)",
        "Transform ID (D-H): 2048 bit MODP group (14)",
        "DH Group #: 2048 bit MODP group (14)",
        "Notify Message Type: NAT_DETECTION_SOURCE_IP (16388)",
        "Notify Message Type: NAT_DETECTION_DESTINATION_IP (16389)",
        "Notify Message Type: REKEY_SA (16393)",
        "SPI: c0002002",
        "ID_IPV4_ADDR: 198.51.100.1",
        "Starting Addr: 10.1.0.0",
        "Ending Addr: 10.1.0.255",
        "Starting Addr: 2001:db8:1::",
        "Ending Addr: 2001:db8:1:ffff:ffff:ffff:ffff:ffff",
        "Number of SPIs: 2",
        "SPI: c0001002",
        "Vendor ID: 657370676174",
    ] {
        assert!(
            text.contains(needle),
            "tshark output lacks {needle:?}:\n{text}"
        );
    }
    let top: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("    Payload: "))
        .collect();
    assert_eq!(
        top,
        [
            "Security Association (33)",
            "Key Exchange (34)",
            "Nonce (40)",
            "Notify (41) - NAT_DETECTION_SOURCE_IP",
            "Notify (41) - NAT_DETECTION_DESTINATION_IP",
            "Notify (41) - REKEY_SA",
            "Identification - Initiator (35)",
            "Traffic Selector - Initiator (44) # 2",
            "Delete (42)",
            "Vendor ID (43) : Unknown Vendor ID",
        ],
        "{text}"
    );
}
