//! Is a console line readable text? A wrong baud rate or a noisy cable shows as bytes
//! that are mostly not printable; counting those lines tells "wrong console settings"
//! apart from "the board said nothing".

/// A line is garbage when over a third of it is neither printable ASCII, common
/// whitespace nor part of valid UTF-8 text.
pub fn is_garbage(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return false;
    }
    let text = String::from_utf8_lossy(bytes);
    let mut bad = 0usize;
    let mut total = 0usize;
    for c in text.chars() {
        total += 1;
        let ok = match c {
            '\t' | ' '..='~' => true,
            '\u{FFFD}' => false,
            c if c.is_control() => c == '\x1b', // ANSI colour codes are fine
            _ => true,
        };
        if !ok {
            bad += 1;
        }
    }
    bad * 3 > total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_text_and_noise_is_not() {
        assert!(!is_garbage(b"U-Boot 2024.01 (Jan 01 2024)"));
        assert!(!is_garbage("Grüße \x1b[32mOK\x1b[0m".as_bytes()));
        assert!(!is_garbage(b""));
        assert!(is_garbage(&[0xff, 0xfe, 0x00, 0x81, b'a', 0x90]));
        assert!(is_garbage(&[0u8; 10]));
    }
}
