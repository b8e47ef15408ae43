//! Turning the tokens of a user's expression back into readable text, for constraint names.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// The text of an attribute's parenthesized arguments as the user wrote them (`(self.qty >= 0)`
/// gives `self.qty >= 0`), with runs of whitespace collapsed; from the tokens when the source
/// text is not available (code produced by another macro).
pub fn attribute_args_text(group: &syn::MacroDelimiter, tokens: &TokenStream) -> String {
    let span = match group {
        syn::MacroDelimiter::Paren(p) => p.span.join(),
        syn::MacroDelimiter::Brace(b) => b.span.join(),
        syn::MacroDelimiter::Bracket(b) => b.span.join(),
    };
    let text = span
        .source_text()
        .and_then(|t| {
            let t = t.trim();
            let inner = t.get(1..t.len().checked_sub(1)?)?;
            Some(inner.to_string())
        })
        .unwrap_or_else(|| tokens_text(tokens.clone()));
    collapse_whitespace(&text)
}

/// The text of `tokens` without the spaces `TokenStream`'s `Display` puts between every token.
pub fn tokens_text(tokens: TokenStream) -> String {
    let mut out = String::new();
    write_tokens(tokens, &mut out);
    out.trim().to_string()
}

fn write_tokens(tokens: TokenStream, out: &mut String) {
    // No space before the next token (after `.`, `::`, a prefix operator, an opening group).
    let mut glue = true;
    // The previous token was a punct joined to this one (`>=`, `&&`, `..`): same operator.
    let mut continues: Option<bool> = None; // Some(whether the operator is a prefix one)
    for tt in tokens {
        match tt {
            TokenTree::Punct(p) => {
                let c = p.as_char();
                let prefix = match continues {
                    Some(prefix) => prefix,
                    None => matches!(c, '-' | '&' | '*' | '!') && !ends_with_operand(out),
                };
                let space_before = continues.is_none() && !matches!(c, '.' | ',' | ';' | '?' | ':');
                if !glue && space_before {
                    out.push(' ');
                }
                out.push(c);
                let joint = p.spacing() == Spacing::Joint;
                let range = out.ends_with("..") || out.ends_with("..=");
                let path = out.ends_with("::");
                glue = joint || prefix || range || path || c == '.';
                continues = joint.then_some(prefix);
            }
            TokenTree::Group(g) => {
                let call = g.delimiter() != Delimiter::Brace && ends_with_operand(out);
                if !glue && !call {
                    out.push(' ');
                }
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => ("{ ", " }"),
                    Delimiter::None => ("", ""),
                };
                out.push_str(open);
                write_tokens(g.stream(), out);
                out.push_str(close);
                glue = false;
                continues = None;
            }
            TokenTree::Ident(_) | TokenTree::Literal(_) => {
                if !glue {
                    out.push(' ');
                }
                out.push_str(&tt.to_string());
                glue = false;
                continues = None;
            }
        }
    }
}

/// Whether `s` ends with something an operator after it applies to as a binary operator.
fn ends_with_operand(s: &str) -> bool {
    s.chars()
        .last()
        .is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | ')' | ']' | '"' | '\''))
}

fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A check's name from its expression text: `self.` is dropped, since the name describes the
/// row (`self.qty >= 0` is named `qty >= 0`).
pub fn check_name(expr_text: &str) -> String {
    expr_text.replace("self.", "")
}

/// A field's name as checks and unique constraints are named after it (`.1` for a tuple field).
pub fn member_name(member: &syn::Member) -> String {
    match member {
        syn::Member::Named(i) => i.to_string(),
        syn::Member::Unnamed(i) => format!(".{}", i.index),
    }
}

/// A path as written, without spaces (`Ev :: Deposit` is `Ev::Deposit`).
pub fn path_text(path: &syn::Path) -> String {
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    let lead = if path.leading_colon.is_some() {
        "::"
    } else {
        ""
    };
    format!("{lead}{}", segments.join("::"))
}

/// `snake_case` of a type name (`StockItem` is `stock_item`, `HTTPLog` is `http_log`).
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1);
            let boundary = prev.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit())
                || (prev.is_some_and(char::is_uppercase) && next.is_some_and(|n| n.is_lowercase()));
            if boundary {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn snake_case_of_type_names() {
        assert_eq!(snake_case("StockItem"), "stock_item");
        assert_eq!(snake_case("Customer"), "customer");
        assert_eq!(snake_case("HTTPLog"), "http_log");
        assert_eq!(snake_case("Order2Item"), "order2_item");
    }

    #[test]
    fn token_text_reads_like_source() {
        assert_eq!(tokens_text(quote!(self.qty >= 0)), "self.qty >= 0");
        assert_eq!(
            tokens_text(quote!(self.reserved <= self.available)),
            "self.reserved <= self.available"
        );
        assert_eq!(
            tokens_text(quote!(!self.name.is_empty())),
            "!self.name.is_empty()"
        );
        assert_eq!(
            tokens_text(quote!(self.a - 1 < std::cmp::max(self.b, 2))),
            "self.a - 1 < std::cmp::max(self.b, 2)"
        );
        assert_eq!(tokens_text(quote!(0..=100)), "0..=100");
        assert_eq!(tokens_text(quote!(-5..)), "-5..");
    }

    #[test]
    fn check_names_drop_self() {
        assert_eq!(check_name("self.qty >= 0"), "qty >= 0");
    }
}
