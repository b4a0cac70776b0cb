//! Key derivation, SK opening and PSK AUTH against a real strongSwan 5.9.8
//! exchange with its logged keys (vectors/strongswan-5.9.8-ikev2-psk.txt,
//! captured by the codec's capture-strongswan.sh). Only g^ir is taken from
//! the log; everything else is recomputed here and compared.

use std::collections::HashMap;

use espgate_controlplane::config::RuleEntry;
use espgate_controlplane::ike::child::{narrow, select_esp, select_ike};
use espgate_controlplane::ike::codec::Reader;
use espgate_controlplane::ike::crypto::{open, psk_auth, SkKeys};
use espgate_controlplane::ike::keys::{ike_keys, skeyseed};
use espgate_controlplane::ike::payload::{decode_chain, IdPayload, Payload, PayloadType};
use espgate_controlplane::ike::Message;
use espgate_dataplane::api::{RuleId, Selector, Suite};

fn vectors() -> HashMap<String, Vec<u8>> {
    include_str!("vectors/strongswan-5.9.8-ikev2-psk.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (n, v) = l.split_once(" = ").expect("name = hex");
            (n.trim().to_string(), hex::decode(v.trim()).expect("hex"))
        })
        .collect()
}

fn nonce(msg: &[u8]) -> Vec<u8> {
    let m = Message::decode(msg).unwrap();
    m.payloads
        .iter()
        .find_map(|p| match p {
            Payload::Nonce(n) => Some(n.0.clone()),
            _ => None,
        })
        .unwrap()
}

fn opened(msg: &[u8], keys: SkKeys<'_>) -> Vec<Payload> {
    let o = open(msg, keys).expect("strongSwan's SK payload must verify and decrypt");
    decode_chain(PayloadType(o.first_inner), &mut Reader::new(&o.inner)).unwrap()
}

fn id_body(p: &[Payload], initiator: bool) -> (Vec<u8>, Vec<u8>) {
    let id: &IdPayload = p
        .iter()
        .find_map(|x| match (x, initiator) {
            (Payload::IdI(i), true) | (Payload::IdR(i), false) => Some(i),
            _ => None,
        })
        .unwrap();
    let auth = p
        .iter()
        .find_map(|x| match x {
            Payload::Auth(a) => Some(a.data.clone()),
            _ => None,
        })
        .unwrap();
    let mut body = vec![id.id_type.0, 0, 0, 0];
    body.extend_from_slice(&id.data);
    (body, auth)
}

#[test]
fn strongswan_exchange_keys_auth_and_sk() {
    let v = vectors();
    let g = |n: &str| v.get(n).unwrap_or_else(|| panic!("{n} missing")).clone();
    let req = g("ike_sa_init_request");
    let resp = g("ike_sa_init_response");
    let ni = nonce(&req);
    let nr = nonce(&resp);
    let spi_i: [u8; 8] = resp[..8].try_into().unwrap();
    let spi_r: [u8; 8] = resp[8..16].try_into().unwrap();

    let seed = skeyseed(&ni, &nr, &g("g_ir"));
    assert_eq!(seed.to_vec(), g("skeyseed"));
    let k = ike_keys(&seed[..], &ni, &nr, &spi_i, &spi_r);
    assert_eq!(k.sk_d.to_vec(), g("sk_d"));
    assert_eq!(k.sk_ai.to_vec(), g("sk_ai"));
    assert_eq!(k.sk_ar.to_vec(), g("sk_ar"));
    assert_eq!(k.sk_ei.to_vec(), g("sk_ei"));
    assert_eq!(k.sk_er.to_vec(), g("sk_er"));
    assert_eq!(k.sk_pi.to_vec(), g("sk_pi"));
    assert_eq!(k.sk_pr.to_vec(), g("sk_pr"));

    let from_i = SkKeys {
        encr: &k.sk_ei,
        integ: &k.sk_ai,
    };
    let from_r = SkKeys {
        encr: &k.sk_er,
        integ: &k.sk_ar,
    };
    let auth_req = opened(&g("ike_auth_request"), from_i);
    let auth_resp = opened(&g("ike_auth_response"), from_r);
    // Wrong direction's keys must fail (the ICV check is real).
    assert!(open(&g("ike_auth_request"), from_r).is_err());

    let (idi, auth_i) = id_body(&auth_req, true);
    let ours_i = psk_auth(b"cisco123", &req, &nr, &k.sk_pi, &idi);
    assert_eq!(ours_i.to_vec(), auth_i);
    assert_eq!(ours_i.to_vec(), g("auth_i"));
    let (idr, auth_r) = id_body(&auth_resp, false);
    let ours_r = psk_auth(b"cisco123", &resp, &ni, &k.sk_pr, &idr);
    assert_eq!(ours_r.to_vec(), auth_r);
    assert_eq!(ours_r.to_vec(), g("auth_r"));

    // Our negotiation logic accepts what strongSwan proposes.
    let ike_props = match &Message::decode(&req).unwrap().payloads[0] {
        Payload::Sa(sa) => sa.proposals.clone(),
        other => panic!("first payload {other:?}"),
    };
    assert_eq!(select_ike(&ike_props), Some(1));
    let esp_props = auth_req
        .iter()
        .find_map(|p| match p {
            Payload::Sa(sa) => Some(sa.proposals.clone()),
            _ => None,
        })
        .unwrap();
    let chosen = select_esp(
        &esp_props,
        &[Suite::Aes256CbcHmacSha256],
        false,
        Some(14),
        false,
    )
    .unwrap();
    assert_eq!(chosen.suite, Suite::Aes256CbcHmacSha256);
    let ts = |pi: bool| {
        auth_req
            .iter()
            .find_map(|p| match (p, pi) {
                (Payload::TsI(t), true) | (Payload::TsR(t), false) => Some(t.selectors.clone()),
                _ => None,
            })
            .unwrap()
    };
    let rules = [RuleEntry {
        rule: RuleId(1),
        selector: Selector::between(
            "10.2.0.0/24".parse().unwrap(),
            "10.1.0.0/24".parse().unwrap(),
        ),
        more: Vec::new(),
        peer: "127.0.0.1".parse().unwrap(),
    }];
    let (rule, sel) = narrow(&ts(true), &ts(false), &rules, "127.0.0.1".parse().unwrap()).unwrap();
    assert_eq!((rule, sel), (RuleId(1), rules[0].selector.clone()));

    // The INFORMATIONAL pair (Delete) opens too.
    let info = opened(&g("informational_request"), from_i);
    assert!(info.iter().any(|p| matches!(p, Payload::Delete(_))));
    let _ = opened(&g("informational_response"), from_r);
}

/// Our machine as responder answers strongSwan's real IKE_SA_INIT request.
#[test]
fn machine_answers_strongswan_ike_sa_init() {
    use espgate_controlplane::config::{Config, PeerConfig, Psk};
    use espgate_controlplane::ike::payload::NotifyType;
    use espgate_controlplane::machine::Machine;
    use espgate_dataplane::api::SpiAllocator;
    use std::sync::Arc;
    use std::time::Instant;

    let v = vectors();
    let req = v["ike_sa_init_request"].clone();
    let mut cfg = Config::new("127.0.0.2".parse().unwrap());
    cfg.peers.push(PeerConfig::new(
        "127.0.0.1".parse().unwrap(),
        Psk::new(b"cisco123".to_vec()),
    ));
    let mut m = Machine::new(cfg, Arc::new(SpiAllocator::new(1)));
    let (local, remote) = (
        "127.0.0.2:500".parse().unwrap(),
        "127.0.0.1:1500".parse().unwrap(),
    );
    m.handle_datagram(Instant::now(), local, remote, &req);
    let t = m.poll_transmit().expect("an IKE_SA_INIT response");
    assert_eq!((t.local, t.remote), (local, remote));
    let resp = Message::decode(&t.data).unwrap();
    assert!(resp.header.is_response());
    assert_eq!(resp.header.spi_i, req[..8]);
    let p = &resp.payloads;
    assert!(
        matches!(&p[0], Payload::Sa(sa) if sa.proposals.len() == 1 && sa.proposals[0].num == 1)
    );
    assert!(matches!(&p[1], Payload::Ke(ke) if ke.group == 14 && ke.data.len() == 256));
    assert!(matches!(&p[2], Payload::Nonce(n) if n.0.len() == 32));
    let natd = p
        .iter()
        .filter(|x| matches!(x, Payload::Notify(n) if n.ntype == NotifyType::NAT_DETECTION_SOURCE_IP || n.ntype == NotifyType::NAT_DETECTION_DESTINATION_IP))
        .count();
    assert_eq!(natd, 2);
    // A retransmitted request gets the identical answer, not a new SA.
    m.handle_datagram(Instant::now(), local, remote, &req);
    assert_eq!(m.poll_transmit().unwrap().data, t.data);
    assert_eq!(m.stats().duplicate_requests, 1);
}
