//! Pointing at the mistake in a configuration file: the 1-based line and column of a byte
//! offset, and a did-you-mean for a misspelt key. Shared by every TOML file testfarm reads
//! (the server's `config.toml`, the agent's `agent.toml`) so their errors read alike.

/// 1-based line and column (in characters) of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Adds "did you mean" to serde's "unknown field `x`, expected one of `a`, `b`".
pub fn with_suggestion(message: &str) -> String {
    let message = message.trim_end();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|cand| (strsim::jaro_winkler(unknown, cand), cand))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, cand)) => format!("{message}; did you mean `{cand}`?"),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 3));
        assert_eq!(line_col(text, 8), (2, 2), "inside a character: its start");
        assert_eq!(line_col(text, 999), (3, 1));
    }

    #[test]
    fn suggests_the_closest_key() {
        let m = with_suggestion("unknown field `listn`, expected `listen` or `url`");
        assert!(m.ends_with("did you mean `listen`?"), "{m}");
        let m = with_suggestion("unknown field `zzz`, expected `listen` or `url`");
        assert!(!m.contains("did you mean"), "{m}");
        assert_eq!(with_suggestion("invalid type\n"), "invalid type");
    }
}
