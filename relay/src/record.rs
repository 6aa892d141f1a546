//! The on-disk record format of the relay's event files (the spool's
//! segments and the dead-letter file): `[u32 length][first 4 bytes of the
//! payload's SHA-256][payload]`. A torn or corrupt tail is recognised by its
//! length or checksum and left out.

use sha2::{Digest, Sha256};

/// Bytes of a record's header (length and checksum).
pub(crate) const HEADER: usize = 8;
/// Largest payload accepted when reading back.
pub(crate) const MAX_PAYLOAD: usize = 1 << 20;

/// Appends `payload` as one record to `out`.
pub(crate) fn encode(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&Sha256::digest(payload)[..4]);
    out.extend_from_slice(payload);
}

/// The whole records at the start of `data` and the length of that valid
/// prefix; `decode` turns a payload into a value (`None` ends the prefix too).
pub(crate) fn decode_all<T>(data: &[u8], decode: impl Fn(&[u8]) -> Option<T>) -> (Vec<T>, usize) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while data.len() - at >= HEADER {
        let len = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        if len > MAX_PAYLOAD || data.len() - at - HEADER < len {
            break;
        }
        let payload = &data[at + HEADER..at + HEADER + len];
        if Sha256::digest(payload)[..4] != data[at + 4..at + HEADER] {
            break;
        }
        let Some(value) = decode(payload) else { break };
        out.push(value);
        at += HEADER + len;
    }
    (out, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_or_corrupt_tail_is_left_out() {
        let mut data = Vec::new();
        encode(b"one", &mut data);
        encode(b"two", &mut data);
        let whole = data.len();
        encode(b"three", &mut data);
        data.truncate(data.len() - 2);
        let (items, valid) = decode_all(&data, |p| Some(p.to_vec()));
        assert_eq!(items, [b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(valid, whole);
        data.truncate(whole);
        data[whole - 1] ^= 1;
        assert_eq!(decode_all(&data, |p| Some(p.to_vec())).0.len(), 1, "a bad checksum ends the prefix");
    }
}
