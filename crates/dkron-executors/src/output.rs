//! Bounded capture of a job's output. A job may print gigabytes; Dkron only
//! stores a bounded amount, and the end of the output (where errors usually
//! are) matters most, so this module owns a tail buffer that keeps the LAST
//! `limit` bytes, and the rendering of captured bytes into a `String` that
//! never exceeds a byte bound and never begins with half a UTF-8 character.

use std::collections::VecDeque;

/// The output of a run in progress, readable while the run goes (the dashboard's live
/// output): the last [`LIVE_LIMIT`] bytes. Cloning shares it.
#[derive(Clone, Default)]
pub struct LiveOutput(std::sync::Arc<std::sync::Mutex<Option<TailBuffer>>>);

/// Bytes a run in progress keeps readable.
pub const LIVE_LIMIT: usize = 64 * 1024;

impl LiveOutput {
    pub fn push(&self, data: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        buf.get_or_insert_with(|| TailBuffer::new(LIVE_LIMIT))
            .push(data);
    }

    /// What the run printed so far (its tail).
    pub fn snapshot(&self) -> String {
        let buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        buf.as_ref().map(TailBuffer::render).unwrap_or_default()
    }
}

impl std::fmt::Debug for LiveOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveOutput")
    }
}

/// Two contexts are equal whatever their live buffers hold.
impl PartialEq for LiveOutput {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for LiveOutput {}

/// Keeps the last `limit` bytes pushed into it.
#[derive(Debug, Clone)]
pub struct TailBuffer {
    buf: VecDeque<u8>,
    limit: usize,
    /// Whether bytes were ever dropped from the front: only then may the
    /// first kept byte sit in the middle of a character.
    truncated: bool,
}

impl TailBuffer {
    pub fn new(limit: usize) -> Self {
        // Do not pre-allocate `limit`: limits are often generous and most jobs
        // print a line or two.
        Self {
            buf: VecDeque::new(),
            limit,
            truncated: false,
        }
    }

    /// Append bytes, dropping the oldest ones beyond the limit.
    pub fn push(&mut self, data: &[u8]) {
        if data.len() >= self.limit {
            if !self.buf.is_empty() || data.len() > self.limit {
                self.truncated = true;
            }
            self.buf.clear();
            self.buf.extend(&data[data.len() - self.limit..]);
            return;
        }
        let overflow = (self.buf.len() + data.len()).saturating_sub(self.limit);
        if overflow > 0 {
            self.truncated = true;
            self.buf.drain(..overflow);
        }
        self.buf.extend(data);
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Whether the kept bytes end with a newline, so callers appending a
    /// message line know whether they must start a new line first.
    pub fn ends_with_newline(&self) -> bool {
        self.buf.back() == Some(&b'\n')
    }

    /// Render at most `max` bytes of the tail as UTF-8 (lossy).
    pub fn render_tail(&self, max: usize) -> String {
        let (a, b) = self.buf.as_slices();
        let mut bytes = Vec::with_capacity(self.buf.len().min(max));
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        let cut = bytes.len() > max;
        let start = bytes.len().saturating_sub(max);
        render_bytes_tail(&bytes[start..], cut || self.truncated, max)
    }

    /// Render the whole kept tail.
    pub fn render(&self) -> String {
        self.render_tail(self.limit)
    }
}

/// Lossy-convert `bytes` to a String of at most `max` bytes, keeping the end.
/// `cut_at_front` says the bytes are a suffix of a longer stream, so leading
/// UTF-8 continuation bytes are the remains of a split character: they are
/// dropped rather than rendered as replacement characters.
fn render_bytes_tail(bytes: &[u8], cut_at_front: bool, max: usize) -> String {
    let mut slice = bytes;
    if cut_at_front {
        // A UTF-8 character has at most 3 continuation bytes.
        let skip = slice
            .iter()
            .take(3)
            .take_while(|b| (0x80..=0xBF).contains(*b))
            .count();
        slice = &slice[skip..];
    }
    let s = String::from_utf8_lossy(slice).into_owned();
    // Lossy conversion can grow the text (one invalid byte becomes a 3-byte
    // U+FFFD), so the byte bound is enforced again on the result.
    tail_str(&s, max).to_owned()
}

/// The longest suffix of `s` that fits in `max` bytes and starts on a
/// character boundary (the core's rule, shared with the API's truncation).
pub use dkron_core::job::tail_utf8 as tail_str;

/// Build a job's final output: `prefix` (status lines, warnings) + the
/// captured tail + `suffix` (kill or mismatch messages), within `limit` bytes.
/// The captured part gives way first, because prefix and suffix explain the
/// outcome; only when they alone exceed the limit is the whole text cut.
pub fn compose(prefix: &str, captured: &TailBuffer, suffix: &str, limit: usize) -> String {
    let fixed = prefix.len() + suffix.len();
    if fixed >= limit {
        let all = format!("{prefix}{}{suffix}", captured.render());
        return tail_str(&all, limit).to_owned();
    }
    let body = captured.render_tail(limit - fixed);
    format!("{prefix}{body}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_under_limit() {
        let mut b = TailBuffer::new(16);
        b.push(b"hello ");
        b.push(b"world");
        assert_eq!(b.render(), "hello world");
    }

    #[test]
    fn keeps_the_tail() {
        let mut b = TailBuffer::new(5);
        b.push(b"abc");
        b.push(b"defg");
        assert_eq!(b.render(), "cdefg");
        b.push(b"0123456789");
        assert_eq!(b.render(), "56789");
    }

    #[test]
    fn never_splits_a_utf8_char_at_the_cut() {
        // "é" is 2 bytes, "€" is 3 bytes, "😀" is 4 bytes.
        for text in ["aé€😀b", "😀😀😀", "€€€€", "ééééé"] {
            for limit in 0..=text.len() {
                let mut b = TailBuffer::new(limit);
                for byte in text.as_bytes() {
                    b.push(std::slice::from_ref(byte));
                }
                let r = b.render();
                assert!(r.len() <= limit, "{text:?} limit {limit}: {r:?}");
                assert!(!r.contains('\u{FFFD}'), "{text:?} limit {limit}: {r:?}");
                assert!(text.ends_with(&r), "{text:?} limit {limit}: {r:?}");
            }
        }
    }

    #[test]
    fn render_tail_bounds_and_drops_partial_char() {
        let mut b = TailBuffer::new(100);
        b.push("x€".as_bytes());
        // The last 2 bytes are the tail of "€": nothing whole fits.
        assert_eq!(b.render_tail(2), "");
        assert_eq!(b.render_tail(3), "€");
        assert_eq!(b.render_tail(4), "x€");
    }

    #[test]
    fn invalid_utf8_is_lossy_and_still_bounded() {
        let mut b = TailBuffer::new(4);
        b.push(&[b'a', 0xFF, 0xFE, b'b']);
        let r = b.render();
        assert!(r.len() <= 4);
        assert!(r.ends_with('b'));
    }

    #[test]
    fn compose_reserves_room_for_prefix_and_suffix() {
        let mut b = TailBuffer::new(100);
        b.push(b"0123456789");
        assert_eq!(compose("P\n", &b, "\nS", 9), "P\n56789\nS");
        assert_eq!(compose("P\n", &b, "\nS", 100), "P\n0123456789\nS");
        // Prefix and suffix alone overflow: the whole text is tail-cut.
        assert_eq!(compose("PPPP", &b, "SSSS", 3), "SSS");
    }

    #[test]
    fn newline_tracking() {
        let mut b = TailBuffer::new(10);
        assert!(!b.ends_with_newline());
        assert!(b.is_empty());
        b.push(b"x\n");
        assert!(b.ends_with_newline());
    }
}
