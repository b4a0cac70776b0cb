//! The IKE SA crypto (`ike::keys`, `ike::crypto`) against the same real
//! strongSwan 5.9.8 exchange the codec tests decode: SKEYSEED and SK_* from
//! g^ir, the nonces and SPIs; every SK payload opened with the derived keys;
//! both PSK AUTH values reproduced; the KEYMAT of both child SAs, with and
//! without PFS (RFC 7296 §2.14, §2.15, §2.17, §3.14).

use std::collections::HashMap;

use espgate_controlplane::ike::crypto::{open, psk_auth, SkKeys};
use espgate_controlplane::ike::keys::{child_keys, ike_keys, skeyseed};
use espgate_controlplane::ike::payload::*;
use espgate_controlplane::ike::{Codec, Message};
use espgate_dataplane::api::Suite;

fn vectors() -> HashMap<String, Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/strongswan-5.9.8-ikev2-psk.txt"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.to_string(), hex::decode(v.trim()).unwrap()))
        .collect()
}

fn nonce(m: &Message) -> Vec<u8> {
    m.payloads
        .iter()
        .find_map(|p| match p {
            Payload::Nonce(n) => Some(n.0.clone()),
            _ => None,
        })
        .unwrap()
}

#[test]
fn key_derivation_sk_and_auth_match_strongswan() {
    let v = vectors();
    let req = Message::decode(&v["ike_sa_init_request"]).unwrap();
    let resp = Message::decode(&v["ike_sa_init_response"]).unwrap();
    let (ni, nr) = (nonce(&req), nonce(&resp));

    let seed = skeyseed(&ni, &nr, &v["g_ir"]);
    assert_eq!(&seed[..], &v["skeyseed"][..]);
    let k = ike_keys(&seed[..], &ni, &nr, &resp.header.spi_i, &resp.header.spi_r);
    for (ours, name) in [
        (&k.sk_d[..], "sk_d"),
        (&k.sk_ai[..], "sk_ai"),
        (&k.sk_ar[..], "sk_ar"),
        (&k.sk_ei[..], "sk_ei"),
        (&k.sk_er[..], "sk_er"),
        (&k.sk_pi[..], "sk_pi"),
        (&k.sk_pr[..], "sk_pr"),
    ] {
        assert_eq!(ours, &v[name][..], "{name}");
    }

    let from_i = SkKeys {
        encr: &k.sk_ei,
        integ: &k.sk_ai,
    };
    let from_r = SkKeys {
        encr: &k.sk_er,
        integ: &k.sk_ar,
    };
    let o = open(&v["ike_auth_request"], from_i).unwrap();
    assert_eq!(o.first_inner, PayloadType::IDi.0);
    for (name, keys) in [
        ("ike_auth_response", from_r),
        ("create_child_sa_request", from_i),
        ("create_child_sa_response", from_r),
        ("informational_request", from_i),
        ("informational_response", from_r),
    ] {
        assert!(open(&v[name], keys).is_ok(), "{name}");
    }
    assert!(open(&v["ike_auth_request"], from_r).is_err());

    let idi = IdPayload::from_addr("127.0.0.1".parse().unwrap());
    let auth_i = psk_auth(
        b"cisco123",
        &v["ike_sa_init_request"],
        &nr,
        &k.sk_pi,
        &idi.get_encoding(),
    );
    assert_eq!(&auth_i[..], &v["auth_i"][..]);
    let idr = IdPayload::from_addr("127.0.0.2".parse().unwrap());
    let auth_r = psk_auth(
        b"cisco123",
        &v["ike_sa_init_response"],
        &ni,
        &k.sk_pr,
        &idr.get_encoding(),
    );
    assert_eq!(&auth_r[..], &v["auth_r"][..]);
}

#[test]
fn child_keymat_matches_strongswan() {
    let v = vectors();
    let init_i = Message::decode(&v["ike_sa_init_request"]).unwrap();
    let init_r = Message::decode(&v["ike_sa_init_response"]).unwrap();
    let (ni, nr) = (nonce(&init_i), nonce(&init_r));
    let c1 = child_keys(&v["sk_d"], None, &ni, &nr, Suite::Aes256CbcHmacSha256);
    assert_eq!(c1.i2r.encr, v["child1_encr_i"]);
    assert_eq!(c1.i2r.integ, v["child1_integ_i"]);
    assert_eq!(c1.r2i.encr, v["child1_encr_r"]);
    assert_eq!(c1.r2i.integ, v["child1_integ_r"]);

    // CREATE_CHILD_SA with PFS: strongSwan logs g^ir (new) | Ni | Nr.
    let seed = &v["child2_seed"];
    let (g_ir, nonces) = seed.split_at(256);
    let (ni2, nr2) = nonces.split_at(32);
    let c2 = child_keys(&v["sk_d"], Some(g_ir), ni2, nr2, Suite::Aes256Gcm16);
    assert_eq!(c2.i2r.encr, v["child2_encr_i"]);
    assert_eq!(c2.r2i.encr, v["child2_encr_r"]);
    assert!(c2.i2r.integ.is_empty());
}
