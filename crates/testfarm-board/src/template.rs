//! Operator templates (`{{ artifacts.firmware }}`, `{{ config }}`): Jinja as Ansible users
//! know it, strict so a misspelt variable is an error rather than an empty string in a
//! command line that then flashes the wrong thing. Checked when the config is read (which
//! variables exist is known per field), rendered when a driver acts.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior, Value};

use crate::error::{BoardError, Result};

/// Which variables a field may use. `artifacts` is open (any artifact name), the rest are
/// closed: `board.name` exists, `board.nmae` does not.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    /// Top-level names allowed, each with its allowed attributes (`None`: any attribute).
    pub roots: &'static [(&'static str, Option<&'static [&'static str]>)],
}

const BOARD_KEYS: &[&str] = &["name", "board_type", "arch"];

/// Power commands and HTTP templates: the board and the action being taken.
pub const POWER: Scope = Scope {
    roots: &[("board", Some(BOARD_KEYS)), ("action", Some(&[]))],
};
/// Flash commands: the board, the artifact paths by name, and the job's config file.
pub const FLASH: Scope = Scope {
    roots: &[
        ("board", Some(BOARD_KEYS)),
        ("artifacts", None),
        ("config", Some(&[])),
    ],
};
/// Console and probe commands: only the board.
pub const BOARD: Scope = Scope {
    roots: &[("board", Some(BOARD_KEYS))],
};

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Command lines are not HTML.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

/// Checks syntax and variable names; the message says which variable is not known.
pub fn check(source: &str, scope: Scope) -> Result<(), String> {
    let env = environment();
    let tmpl = env
        .template_from_str(source)
        .map_err(|e| format!("template syntax: {}", e.detail().unwrap_or("invalid")))?;
    let mut names: Vec<String> = tmpl.undeclared_variables(true).into_iter().collect();
    names.sort();
    for name in names {
        let mut parts = name.splitn(2, '.');
        let root = parts.next().unwrap_or_default();
        let attr = parts.next();
        let allowed: Vec<&str> = scope.roots.iter().map(|(r, _)| *r).collect();
        let Some((_, attrs)) = scope.roots.iter().find(|(r, _)| *r == root) else {
            return Err(format!(
                "unknown template variable `{root}`; this field knows {}",
                allowed.join(", ")
            ));
        };
        if let (Some(attrs), Some(attr)) = (attrs, attr) {
            let attr = attr.split('.').next().unwrap_or_default();
            if !attrs.contains(&attr) {
                let known = if attrs.is_empty() {
                    "none".to_string()
                } else {
                    attrs.join(", ")
                };
                return Err(format!(
                    "unknown template variable `{root}.{attr}`; `{root}` has {known}"
                ));
            }
        }
    }
    Ok(())
}

/// Values a template is rendered with.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub board: BTreeMap<String, String>,
    pub values: BTreeMap<String, Value>,
}

impl Context {
    pub fn for_board(name: &str, board_type: &str, arch: &str) -> Context {
        let mut board = BTreeMap::new();
        board.insert("name".into(), name.into());
        board.insert("board_type".into(), board_type.into());
        board.insert("arch".into(), arch.into());
        Context {
            board,
            values: BTreeMap::new(),
        }
    }

    pub fn with(mut self, key: &str, value: Value) -> Context {
        self.values.insert(key.into(), value);
        self
    }
}

/// Renders strictly: a variable missing at run time (an artifact the job did not bring) is
/// a named error, not an empty argument.
pub fn render(source: &str, ctx: &Context) -> Result<String> {
    let env = environment();
    let mut root: BTreeMap<String, Value> = ctx.values.clone();
    root.insert("board".into(), Value::from_serialize(&ctx.board));
    env.render_str(source, Value::from_serialize(&root))
        .map_err(|e| BoardError::Template {
            template: source.to_string(),
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_variables_pass_and_unknown_are_named() {
        assert!(
            check(
                "flash {{ artifacts.firmware }} --config {{ config }}",
                FLASH
            )
            .is_ok()
        );
        let e = check("flash {{ artifact.firmware }}", FLASH).unwrap_err();
        assert!(e.contains("`artifact`"), "{e}");
        let e = check("{{ board.nmae }}", POWER).unwrap_err();
        assert!(e.contains("board.nmae"), "{e}");
        let e = check("{{ config }}", POWER).unwrap_err();
        assert!(e.contains("`config`"), "{e}");
        let e = check("{{ oops", POWER).unwrap_err();
        assert!(e.contains("syntax"), "{e}");
    }

    #[test]
    fn render_is_strict() {
        let ctx = Context::for_board("b1", "rpi4", "arm64").with(
            "artifacts",
            Value::from_serialize(BTreeMap::from([("firmware", "/a/fw.bin")])),
        );
        assert_eq!(
            render("x {{ artifacts.firmware }} {{ board.name }}", &ctx).unwrap(),
            "x /a/fw.bin b1"
        );
        assert!(render("{{ artifacts.kernel }}", &ctx).is_err());
    }
}
