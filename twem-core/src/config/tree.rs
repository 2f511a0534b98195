//! The raw tree that both config formats are read into before validation.
//!
//! YAML and TOML land in the same [`Node`] shape, with scalars kept as the
//! text the user wrote: nutcracker judges `redis: "true"` and `timeout: 0x10`
//! by their text, not by YAML's type guesses, so typing happens only in
//! `validate`. Mapping entries are kept as a list, duplicates included,
//! because yaml-rust2's own loader would stop at the first duplicate key and
//! `validate` wants to report all of them.

use std::borrow::Cow;

use toml::de::{DeTable, DeValue};
use toml::Spanned;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, ScanError};

use super::Problem;

/// Deeper nesting than this is never a valid config (the deepest valid path
/// is root -> pool -> `servers` -> entry); stopping early bounds memory and
/// keeps the recursive drop of a hostile `[[[[...` document shallow.
pub(crate) const MAX_DEPTH: usize = 16;

/// A 1-based line and column in the config text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl From<Marker> for Pos {
    fn from(mark: Marker) -> Pos {
        // yaml-rust2 counts lines from 1 but columns from 0.
        Pos {
            line: mark.line(),
            column: mark.col() + 1,
        }
    }
}

/// One value of the config document and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) pos: Pos,
}

/// The shape of a [`Node`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    /// Any YAML scalar, or a TOML string, integer, float, boolean or date,
    /// as text.
    Scalar(String),
    /// A YAML sequence or TOML array.
    Seq(Vec<Node>),
    /// A YAML mapping or TOML table: (key, value) pairs in file order,
    /// duplicates kept.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The scalar text, or `None` for a list or mapping.
    pub(crate) fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(text) => Some(text),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// "a list" / "a mapping" / "a value", for messages about wrong shapes.
    pub(crate) fn kind(&self) -> &'static str {
        match self.value {
            Value::Scalar(_) => "a single value",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A problem found while reading the text, before any pool is looked at.
fn syntax(format: &str, pos: Pos, message: impl std::fmt::Display) -> Problem {
    Problem {
        pool: None,
        key: None,
        message: format!(
            "invalid {format} at line {} column {}: {message}",
            pos.line, pos.column
        ),
        line: Some(pos.line),
    }
}

fn scan_error(err: &ScanError) -> Problem {
    syntax("YAML", Pos::from(*err.marker()), err.info())
}

/// A collection being built while its events arrive.
enum Frame {
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<(Node, Node)>, Option<Node>),
}

/// Reads YAML text into a tree; `Ok(None)` for a document with no content.
///
/// Anchors, aliases and tags are refused: nutcracker refuses them too, and an
/// alias would make one config value appear in several places, which no
/// message could then point at.
pub(crate) fn from_yaml(text: &str) -> Result<Option<Node>, Problem> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| scan_error(&e))?;
        let pos = Pos::from(mark);
        let node = match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(syntax(
                        "YAML",
                        pos,
                        "the file must hold exactly one YAML document, found a second one",
                    ));
                }
                continue;
            }
            Event::Alias(_) => {
                return Err(syntax(
                    "YAML",
                    pos,
                    "aliases (*name) are not supported; write the value out",
                ))
            }
            Event::Scalar(text, _style, anchor, tag) => {
                refuse_anchor_and_tag(pos, anchor, tag.is_some())?;
                Node {
                    value: Value::Scalar(text),
                    pos,
                }
            }
            Event::SequenceStart(anchor, tag) => {
                refuse_anchor_and_tag(pos, anchor, tag.is_some())?;
                check_depth(&stack, pos)?;
                stack.push(Frame::Seq(pos, Vec::new()));
                continue;
            }
            Event::MappingStart(anchor, tag) => {
                refuse_anchor_and_tag(pos, anchor, tag.is_some())?;
                check_depth(&stack, pos)?;
                stack.push(Frame::Map(pos, Vec::new(), None));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(start, items)) => Node {
                    value: Value::Seq(items),
                    pos: start,
                },
                // A key without a value cannot reach here: the parser emits
                // an empty scalar for the missing value.
                Some(Frame::Map(start, entries, _)) => Node {
                    value: Value::Map(entries),
                    pos: start,
                },
                None => return Err(syntax("YAML", pos, "unbalanced end of a collection")),
            },
        };
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, pending_key)) => match pending_key.take() {
                Some(key) => entries.push((key, node)),
                None => *pending_key = Some(node),
            },
        }
    }
    Ok(root)
}

fn refuse_anchor_and_tag(pos: Pos, anchor: usize, tagged: bool) -> Result<(), Problem> {
    if anchor != 0 {
        return Err(syntax(
            "YAML",
            pos,
            "anchors (&name) are not supported; write the value out",
        ));
    }
    if tagged {
        return Err(syntax(
            "YAML",
            pos,
            "tags (!name) are not supported; write the plain value",
        ));
    }
    Ok(())
}

fn check_depth(stack: &[Frame], pos: Pos) -> Result<(), Problem> {
    if stack.len() >= MAX_DEPTH {
        return Err(syntax(
            "YAML",
            pos,
            format!("nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    Ok(())
}

/// Byte offset -> line and column, for TOML spans.
struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Lines<'a> {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines { text, starts }
    }

    fn pos(&self, offset: usize) -> Pos {
        let line = self.starts.partition_point(|&start| start <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let column = self
            .text
            .get(start..offset.min(self.text.len()))
            .map_or(1, |before| before.chars().count() + 1);
        Pos { line, column }
    }
}

/// Reads TOML text into the same tree as YAML; an empty document gives an
/// empty mapping.
pub(crate) fn from_toml(text: &str) -> Result<Option<Node>, Problem> {
    let lines = Lines::new(text);
    let table = DeTable::parse(text).map_err(|err| {
        let pos = lines.pos(err.span().map_or(0, |span| span.start));
        syntax("TOML", pos, err.message().trim_end())
    })?;
    let pos = lines.pos(table.span().start);
    let node = toml_table(table.get_ref(), pos, &lines, 0)?;
    Ok(Some(node))
}

fn toml_table(
    table: &DeTable<'_>,
    pos: Pos,
    lines: &Lines<'_>,
    depth: usize,
) -> Result<Node, Problem> {
    let mut entries = Vec::with_capacity(table.len());
    for (key, value) in table {
        let key_node = Node {
            value: Value::Scalar(key.get_ref().to_string()),
            pos: lines.pos(key.span().start),
        };
        entries.push((key_node, toml_value(value, lines, depth + 1)?));
    }
    Ok(Node {
        value: Value::Map(entries),
        pos,
    })
}

fn toml_value(
    value: &Spanned<DeValue<'_>>,
    lines: &Lines<'_>,
    depth: usize,
) -> Result<Node, Problem> {
    let pos = lines.pos(value.span().start);
    if depth > MAX_DEPTH {
        return Err(syntax(
            "TOML",
            pos,
            format!("nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    let scalar = |text: Cow<'_, str>| Node {
        value: Value::Scalar(text.into_owned()),
        pos,
    };
    Ok(match value.get_ref() {
        DeValue::String(text) => scalar(Cow::Borrowed(text)),
        // Rewritten as plain decimal so `timeout = 1_000` and `0x3e8` mean
        // what TOML says they mean; the digits-only rule then applies to the
        // value, as it does for YAML's text.
        DeValue::Integer(int) => match i128::from_str_radix(int.as_str(), int.radix()) {
            Ok(n) => scalar(Cow::Owned(n.to_string())),
            Err(_) => scalar(Cow::Owned(int.to_string())),
        },
        DeValue::Float(float) => scalar(Cow::Borrowed(float.as_str())),
        DeValue::Boolean(b) => scalar(Cow::Borrowed(if *b { "true" } else { "false" })),
        DeValue::Datetime(date) => scalar(Cow::Owned(date.to_string())),
        DeValue::Array(items) => {
            let mut nodes = Vec::new();
            for item in items.iter() {
                nodes.push(toml_value(item, lines, depth + 1)?);
            }
            Node {
                value: Value::Seq(nodes),
                pos,
            }
        }
        DeValue::Table(table) => toml_table(table, pos, lines, depth)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(node: &Node) -> &str {
        node.as_scalar().unwrap_or("<not a scalar>")
    }

    // Duplicate keys survive into the tree so validate can name them.
    #[test]
    fn yaml_keeps_duplicate_keys() {
        let root = from_yaml("a:\n  hash: md5\n  hash: crc16\n")
            .unwrap()
            .unwrap();
        let Value::Map(pools) = &root.value else {
            panic!("root is {root:?}")
        };
        let Value::Map(keys) = &pools[0].1.value else {
            panic!("pool is {:?}", pools[0].1)
        };
        assert_eq!(keys.len(), 2);
        assert_eq!(scalar(&keys[0].1), "md5");
        assert_eq!(scalar(&keys[1].1), "crc16");
        assert_eq!(keys[1].0.pos, Pos { line: 3, column: 3 });
    }

    // Scalars stay text: YAML's `True` is not turned into a boolean.
    #[test]
    fn yaml_scalars_stay_text() {
        let root = from_yaml("a: {redis: True, timeout: 0x10, hash_tag: '{}', e: }")
            .unwrap()
            .unwrap();
        let Value::Map(pools) = &root.value else {
            panic!()
        };
        let Value::Map(keys) = &pools[0].1.value else {
            panic!()
        };
        let texts: Vec<&str> = keys.iter().map(|(_, v)| scalar(v)).collect();
        assert_eq!(texts, ["True", "0x10", "{}", ""]);
    }

    // An empty file, or one with only comments, has no root.
    #[test]
    fn yaml_empty_is_none() {
        assert_eq!(from_yaml("").unwrap(), None);
        assert_eq!(from_yaml("# nothing\n\n").unwrap(), None);
    }

    // Syntax errors carry line and column.
    #[test]
    fn yaml_syntax_error_has_position() {
        let err = from_yaml("a:\n  b: c\n d: [\n").unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(
            err.message.starts_with("invalid YAML at line 3 column"),
            "{}",
            err.message
        );
    }

    // Anchors, aliases, tags and second documents are refused by name.
    #[test]
    fn yaml_refuses_anchors_aliases_tags_and_documents() {
        let cases = [
            ("a: &x 1\nb: *x\n", "anchors"),
            ("a: !!str 1\n", "tags"),
            ("a: 1\n---\nb: 2\n", "exactly one YAML document"),
        ];
        for (text, want) in cases {
            let err = from_yaml(text).unwrap_err();
            assert!(err.message.contains(want), "{text:?}: {}", err.message);
        }
    }

    // Deep nesting stops at MAX_DEPTH instead of growing without bound.
    #[test]
    fn yaml_depth_is_limited() {
        let text: String = (0..100)
            .map(|depth| format!("{}k:\n", " ".repeat(depth)))
            .collect();
        let err = from_yaml(&text).unwrap_err();
        assert!(
            err.message.contains("nested deeper than 16"),
            "{}",
            err.message
        );
        assert_eq!(err.line, Some(17));
        // Flow nesting is cut off by the scanner itself, still as an error.
        assert!(from_yaml(&"[".repeat(100_000)).is_err());
    }

    // TOML integers are rewritten in decimal; other scalars keep their text.
    #[test]
    fn toml_scalars() {
        let root = from_toml("[a]\nt = 0x10\nu = 1_000\nr = true\ns = \"x\"\nf = 1.5\n")
            .unwrap()
            .unwrap();
        let Value::Map(pools) = &root.value else {
            panic!()
        };
        let Value::Map(keys) = &pools[0].1.value else {
            panic!()
        };
        let texts: Vec<&str> = keys.iter().map(|(_, v)| scalar(v)).collect();
        assert_eq!(texts, ["16", "1000", "true", "x", "1.5"]);
        assert_eq!(keys[1].0.pos, Pos { line: 3, column: 1 });
    }

    // TOML syntax errors carry line and column too.
    #[test]
    fn toml_syntax_error_has_position() {
        let err = from_toml("[a]\nlisten = \"x\"\nlisten = \"y\"\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{}", err.message);
        assert!(
            err.message.starts_with("invalid TOML at line 3"),
            "{}",
            err.message
        );
    }

    // Deep TOML nesting is refused.
    #[test]
    fn toml_depth_is_limited() {
        let text = format!("a = {}{}", "[".repeat(40), "]".repeat(40));
        let err = from_toml(&text).unwrap_err();
        assert!(err.message.contains("nested deeper"), "{}", err.message);
    }
}
