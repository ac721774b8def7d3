//! Key templates: `"user:{id}"` into literal text and placeholders.
//!
//! Like thiserror's `{field}` parsing in `#[error("…")]`, this works on the
//! literal's value, and every error points at the literal. `{{` and `}}` are
//! literal braces.

use proc_macro2::Span;
use syn::LitStr;

pub struct Template {
    pub segments: Vec<Segment>,
    pub span: Span,
}

pub enum Segment {
    Literal(String),
    Placeholder(Placeholder),
}

/// `{root}` or `{root.field.field…}`; `root` may be `self`.
pub struct Placeholder {
    pub root: String,
    pub fields: Vec<String>,
}

impl Placeholder {
    pub fn text(&self) -> String {
        let mut text = self.root.clone();
        for field in &self.fields {
            text.push('.');
            text.push_str(field);
        }
        text
    }
}

pub fn parse(lit: &LitStr) -> syn::Result<Template> {
    let source = lit.value();
    let span = lit.span();
    let error = |message: String| syn::Error::new(span, message);
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut chars = source.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                chars.next();
                literal.push('}');
            }
            '}' => {
                return Err(error(format!(
                    "unbalanced `}}` at byte {start} of the key template: write `}}}}` for a literal brace"
                )));
            }
            '{' => {
                let Some(len) = source[start + 1..].find('}') else {
                    return Err(error(format!(
                        "unbalanced `{{` at byte {start} of the key template: close the placeholder with `}}`, or write `{{{{` for a literal brace"
                    )));
                };
                let inner = &source[start + 1..start + 1 + len];
                // Skip past the placeholder and its closing brace.
                while chars.next_if(|&(i, _)| i <= start + 1 + len).is_some() {}
                let placeholder = parse_placeholder(inner).map_err(error)?;
                if !literal.is_empty() {
                    segments.push(Segment::Literal(std::mem::take(&mut literal)));
                }
                segments.push(Segment::Placeholder(placeholder));
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        segments.push(Segment::Literal(literal));
    }
    Ok(Template { segments, span })
}

fn parse_placeholder(inner: &str) -> Result<Placeholder, String> {
    if inner.trim().is_empty() {
        return Err(
            "empty placeholder `{}` in the key template: name a parameter, as in `{id}`".into(),
        );
    }
    if inner.contains('{') {
        return Err(format!(
            "unbalanced `{{` in the key template: `{{{inner}}}` opens a placeholder inside a placeholder"
        ));
    }
    if let Some(spec) = inner.find(':') {
        return Err(format!(
            "format specifiers are not supported in key templates: `{{{inner}}}` has `{}`; keys use each value's `Display` output",
            &inner[spec..]
        ));
    }
    let mut parts = inner.split('.');
    let root = parts.next().unwrap_or_default();
    if !is_identifier(root) {
        return Err(format!(
            "`{{{inner}}}` is not a placeholder: expected a parameter name, as in `{{id}}` or `{{user.id}}`"
        ));
    }
    let mut fields = Vec::new();
    for field in parts {
        let is_tuple_index = !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit());
        if !is_identifier(field) && !is_tuple_index {
            return Err(format!(
                "`{{{inner}}}` is not a placeholder: `{field}` is not a field name"
            ));
        }
        fields.push(field.to_owned());
    }
    Ok(Placeholder {
        root: root.to_owned(),
        fields,
    })
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}
