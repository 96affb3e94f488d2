//! What every target feeds its parser: the fuzzer's bytes as they are (first byte even), or
//! a valid input with them laid over a window of it, starting where the first byte says
//! (so the fuzzer reaches past the first checks a valid input passes).

/// `None` for an empty input.
pub fn from(data: &[u8], valid: &[u8]) -> Option<Vec<u8>> {
    let (&mode, rest) = data.split_first()?;
    if mode & 1 == 0 {
        return Some(rest.to_vec());
    }
    let mut v = valid.to_vec();
    let at = usize::from(mode >> 1) * v.len() / 128;
    for (dst, src) in v[at..].iter_mut().zip(rest) {
        *dst = *src;
    }
    Some(v)
}
