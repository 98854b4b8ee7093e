//! Zig-zag variable-length integers, as Kafka's records use them (the
//! protobuf encoding: 7 bits per byte, low groups first).

/// The most bytes a zig-zag `i64` takes.
pub(crate) const MAX_VARLONG_BYTES: usize = 10;

pub(crate) fn put_varlong(out: &mut impl bytes::BufMut, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.put_u8((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.put_u8(zigzag as u8);
}

pub(crate) fn put_varint(out: &mut impl bytes::BufMut, value: i32) {
    put_varlong(out, i64::from(value));
}

/// How many bytes `put_varlong(value)` writes.
pub(crate) fn varlong_len(value: i64) -> usize {
    let zigzag = ((value << 1) ^ (value >> 63)) as u64;
    let bits = 64 - (zigzag | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads a zig-zag varlong from the front of `input`; returns it and the
/// bytes it took, or `None` when the input ends early or runs past 10 bytes.
pub(crate) fn get_varlong(input: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (index, byte) in input.iter().take(MAX_VARLONG_BYTES).enumerate() {
        raw |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            let value = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            return Some((value, index + 1));
        }
    }
    None
}

/// Reads a zig-zag varint that must fit an `i32`.
pub(crate) fn get_varint(input: &[u8]) -> Option<(i32, usize)> {
    let (value, used) = get_varlong(input)?;
    Some((i32::try_from(value).ok()?, used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varlong_round_trips(value in any::<i64>()) {
            let mut out = Vec::new();
            put_varlong(&mut out, value);
            prop_assert_eq!(out.len(), varlong_len(value));
            prop_assert_eq!(get_varlong(&out), Some((value, out.len())));
        }

        #[test]
        fn varlong_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = get_varlong(&bytes);
        }
    }

    #[test]
    fn small_values_match_kafka() {
        let mut out = Vec::new();
        put_varint(&mut out, -1);
        put_varint(&mut out, 0);
        put_varint(&mut out, 1);
        put_varint(&mut out, 64);
        assert_eq!(out, vec![0x01, 0x00, 0x02, 0x80, 0x01]);
    }
}
