//! Key paths as Kargo writes them: `a.b.0.c`, dots separate keys, a number picks a sequence or
//! array item, and `\.` is a dot inside a key (`metadata.annotations.example\.com/team`).

#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A number: an item of a sequence, or a key made of digits in a mapping.
    Index(usize),
}

impl Segment {
    pub fn as_key(&self) -> String {
        match self {
            Segment::Key(k) => k.clone(),
            Segment::Index(i) => i.to_string(),
        }
    }
}

/// Splits a key path; an empty path or an empty part is an error.
pub fn split(key: &str) -> Result<Vec<Segment>, String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => current.push(next),
                None => return Err(format!("key {key:?} ends with a lone backslash")),
            },
            '.' => parts.push(std::mem::take(&mut current)),
            other => current.push(other),
        }
    }
    parts.push(current);
    if parts.iter().any(String::is_empty) {
        return Err(format!(
            "key {key:?} has an empty part (two dots, or a dot at either end)"
        ));
    }
    Ok(parts
        .into_iter()
        .map(|p| match p.parse::<usize>() {
            Ok(i) if !p.starts_with('+') => Segment::Index(i),
            _ => Segment::Key(p),
        })
        .collect())
}

/// A path as a user wrote it, for messages.
pub fn display(path: &[Segment]) -> String {
    path.iter()
        .map(|s| s.as_key().replace('.', "\\."))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_dots_unless_escaped() {
        assert_eq!(
            split(r"a.0.example\.com/x").unwrap(),
            vec![
                Segment::Key("a".into()),
                Segment::Index(0),
                Segment::Key("example.com/x".into())
            ]
        );
        assert!(split("a..b").is_err());
        assert!(split("").is_err());
    }
}
