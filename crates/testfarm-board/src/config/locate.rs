//! From a byte offset to "board X, field power.on, line 7 column 1", and back from a
//! field path to its position: toml's span-keeping parse tree answers both, so errors found
//! by serde and errors found by our own checks point at the same kind of place.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::BoardConfigError;
use testfarm_core::diagnostic::line_col;

pub(super) struct Document<'a> {
    text: &'a str,
    root: Spanned<DeTable<'a>>,
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

fn key_str<'k>(k: &'k Spanned<toml::de::DeString<'_>>) -> &'k str {
    k.get_ref().as_ref()
}

impl<'a> Document<'a> {
    /// Parses for positions only; a syntax error is reported here, located.
    pub(super) fn parse(text: &'a str) -> Result<Document<'a>, BoardConfigError> {
        match DeTable::parse(text) {
            Ok(root) => Ok(Document { text, root }),
            Err(e) => {
                let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
                Err(BoardConfigError {
                    board: None,
                    field: String::new(),
                    line,
                    column,
                    message: e.message().trim_end().to_string(),
                })
            }
        }
    }

    fn boards(&self) -> &[Spanned<DeValue<'a>>] {
        self.root
            .get_ref()
            .iter()
            .find(|(k, _)| key_str(k) == "board")
            .and_then(|(_, v)| v.get_ref().as_array())
            .map_or(&[], |a| &a[..])
    }

    fn board_name(board: &Spanned<DeValue<'_>>) -> Option<String> {
        board
            .get_ref()
            .as_table()?
            .iter()
            .find(|(k, _)| key_str(k) == "name")
            .and_then(|(_, v)| v.get_ref().as_str())
            .map(str::to_string)
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        line_col(self.text, offset)
    }

    /// An error serde reported at `offset`: which board and which field it is in.
    pub(super) fn error_at(&self, offset: Option<usize>, message: String) -> BoardConfigError {
        let Some(offset) = offset else {
            return BoardConfigError {
                board: None,
                field: String::new(),
                line: 0,
                column: 0,
                message,
            };
        };
        let (line, column) = self.position(offset);
        let boards = self.boards();
        // Tables of an array may not span their whole body: the last one starting before
        // the offset is the one it is in.
        let board = boards
            .iter()
            .find(|b| contains(&b.span(), offset))
            .or_else(|| boards.iter().rfind(|b| b.span().start <= offset));
        let (name, field) = match board {
            Some(b) => {
                let mut path = Vec::new();
                if let Some(t) = b.get_ref().as_table() {
                    descend(t, offset, &mut path);
                }
                (Self::board_name(b), path.join("."))
            }
            None => (None, String::new()),
        };
        BoardConfigError {
            board: name,
            field,
            line,
            column,
            message,
        }
    }

    /// An error our checks found in board `index` at `field` (a dotted path).
    pub(super) fn error_in(&self, index: usize, field: &str, message: String) -> BoardConfigError {
        let board = self.boards().get(index);
        let name = board.and_then(Self::board_name);
        let mut offset = board.map(|b| b.span().start);
        if let Some(mut table) = board.and_then(|b| b.get_ref().as_table()) {
            for part in field.split('.') {
                let Some((k, v)) = table.iter().find(|(k, _)| key_str(k) == part) else {
                    break;
                };
                offset = Some(k.span().start);
                match v.get_ref().as_table() {
                    Some(t) => table = t,
                    None => break,
                }
            }
        }
        let (line, column) = offset.map_or((0, 0), |o| self.position(o));
        BoardConfigError {
            board: name,
            field: field.to_string(),
            line,
            column,
            message,
        }
    }
}

fn descend(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) {
    for (k, v) in table.iter() {
        if contains(&k.span(), offset) {
            path.push(key_str(k).to_string());
            return;
        }
        if contains(&v.span(), offset) {
            path.push(key_str(k).to_string());
            if let Some(t) = v.get_ref().as_table() {
                descend(t, offset, path);
            }
            return;
        }
    }
}
