//! Bytes to lines, whatever arrives: `\r\n` or `\n` ends a line, a line longer than the
//! bound is cut (and says so) rather than growing without end, and invalid UTF-8 is kept as
//! bytes so the garbage check can see it. A board that stops mid-line leaves a pending
//! partial line that the reader flushes after a quiet moment (a `login: ` prompt has no
//! newline).

/// One line as read, before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    pub bytes: Vec<u8>,
    /// Cut at the length bound; the rest follows as the next line.
    pub truncated: bool,
    /// Flushed without a line end (the board paused or stopped mid-line).
    pub partial: bool,
}

#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max_line: usize,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter {
            pending: Vec::new(),
            max_line: max_line.max(1),
        }
    }

    /// Feeds bytes; complete lines come out, the rest waits.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<RawLine>) {
        while !data.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    self.extend_bounded(&data[..i], out);
                    let mut bytes = std::mem::take(&mut self.pending);
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                    out.push(RawLine {
                        bytes,
                        truncated: false,
                        partial: false,
                    });
                    data = &data[i + 1..];
                }
                None => {
                    self.extend_bounded(data, out);
                    data = &[];
                }
            }
        }
    }

    fn extend_bounded(&mut self, mut data: &[u8], out: &mut Vec<RawLine>) {
        while self.pending.len() + data.len() > self.max_line {
            let room = self.max_line - self.pending.len();
            self.pending.extend_from_slice(&data[..room]);
            out.push(RawLine {
                bytes: std::mem::take(&mut self.pending),
                truncated: true,
                partial: false,
            });
            data = &data[room..];
        }
        self.pending.extend_from_slice(data);
    }

    /// The pending partial line, if any (after a quiet moment, or at end of input).
    pub fn flush(&mut self) -> Option<RawLine> {
        if self.pending.is_empty() || self.pending == b"\r" {
            self.pending.clear();
            return None;
        }
        Some(RawLine {
            bytes: std::mem::take(&mut self.pending),
            truncated: false,
            partial: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_bounds_and_flushes() {
        let mut s = LineSplitter::new(8);
        let mut out = Vec::new();
        s.push(b"ab\r\ncd", &mut out);
        s.push(b"ef\n0123456789\nlogin: ", &mut out);
        let texts: Vec<&[u8]> = out.iter().map(|l| l.bytes.as_slice()).collect();
        assert_eq!(texts, [&b"ab"[..], b"cdef", b"01234567", b"89"]);
        assert!(out[2].truncated && !out[3].truncated);
        let p = s.flush().unwrap();
        assert_eq!((p.bytes.as_slice(), p.partial), (&b"login: "[..], true));
        assert_eq!(s.flush(), None);
    }

    proptest! {
        /// However the bytes are chunked, no byte is lost or reordered (line ends aside),
        /// and no line passes the bound.
        #[test]
        fn chunking_does_not_matter(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(1usize..50, 1..40),
        ) {
            let mut s = LineSplitter::new(32);
            let mut out = Vec::new();
            let mut rest = &data[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                s.push(&rest[..n], &mut out);
                rest = &rest[n..];
                i += 1;
            }
            out.extend(s.flush());
            let mut whole = LineSplitter::new(32);
            let mut expected = Vec::new();
            whole.push(&data, &mut expected);
            expected.extend(whole.flush());
            prop_assert_eq!(&out, &expected);
            prop_assert!(out.iter().all(|l| l.bytes.len() <= 32));
            let kept: usize = out.iter().map(|l| l.bytes.len()).sum();
            let newlines = data.iter().filter(|b| **b == b'\n').count();
            prop_assert!(kept <= data.len() - newlines);
        }
    }
}

/// The text without terminal escape sequences (`ESC [ … final`, `ESC x`): what a shell's
/// line editor sends around its prompt (busybox asks for the cursor position with
/// `ESC [ 6 n` right after printing it) is not part of what a pattern should see.
pub fn strip_escapes(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('\u{1b}') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // CSI: parameters and intermediates, then one final byte in @..~.
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC: up to BEL or ESC \.
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod escape_tests {
    use super::strip_escapes;

    #[test]
    fn prompts_lose_their_escape_sequences() {
        assert_eq!(strip_escapes("root@b:~# \u{1b}[6n"), "root@b:~# ");
        assert_eq!(strip_escapes("\u{1b}[1;32mOK\u{1b}[0m done"), "OK done");
        assert_eq!(strip_escapes("\u{1b}]0;title\u{7}$ "), "$ ");
        assert_eq!(strip_escapes("plain"), "plain");
        assert_eq!(strip_escapes("cut \u{1b}["), "cut ");
    }
}
