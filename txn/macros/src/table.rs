//! `#[derive(Table)]`: a row struct that declares its own table — primary key, placement and
//! checks — so the builder code shrinks to `Row::table(&mut builder, service)`.

use crate::errors::Errors;
use crate::text;
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Expr, LitStr, Member, Meta, Token, Type};

/// One `#[check(..)]`: the name it is reported under and the expression of the check method.
struct CheckDef {
    name: String,
    body: TokenStream,
    span: Span,
}

/// What `#[table(..)]` says.
#[derive(Default)]
struct TableArgs {
    name: Option<LitStr>,
    ordered: bool,
    /// `replicated` (the span, for errors).
    replicated: Option<Span>,
    place_by: Option<Vec<Member>>,
    /// `key = Type`: the key is kept outside the row (a key struct), not in `#[key]` fields.
    key: Option<Type>,
    /// `placement = path`: places rows by `path(&key)` (with `key = Type`).
    placement: Option<syn::ExprPath>,
    /// `subject = key` (or `key.field`): the row's key names whose personal data it is.
    subject_key: Option<Expr>,
}

/// A personal field: its member and its data category (`#[pii]` is category `pii`).
struct PersonalField {
    member: Member,
    category: String,
}

/// One `#[unique]` field: its name and the expression of its value over `row: &Self`.
struct UniqueDef {
    name: String,
    value: TokenStream,
}

struct KeyField {
    member: Member,
    ty: Type,
}

pub fn derive(input: DeriveInput) -> syn::Result<TokenStream> {
    let fields = match &input.data {
        Data::Struct(s) => &s.fields,
        Data::Enum(e) => {
            return Err(syn::Error::new(
                e.enum_token.span,
                "#[derive(Table)] needs a struct: a table's rows are structs with #[key] fields",
            ));
        }
        Data::Union(u) => {
            return Err(syn::Error::new(
                u.union_token.span,
                "#[derive(Table)] needs a struct: a table's rows are structs with #[key] fields",
            ));
        }
    };
    let mut errors = Errors::default();

    let mut args = TableArgs::default();
    // Field checks are declared first (in field order), then the struct's: the simplest
    // condition a row breaks is the one reported.
    let mut struct_checks = Vec::new();
    for attr in &input.attrs {
        if attr.path().is_ident("table") {
            errors.push(parse_table_args(attr, &mut args));
        } else if attr.path().is_ident("check") {
            match struct_check(attr) {
                Ok(c) => struct_checks.push(c),
                Err(e) => errors.add(e),
            }
        } else if attr.path().is_ident("key") {
            errors.add(syn::Error::new_spanned(
                attr,
                "#[key] goes on the primary key field(s), not on the struct",
            ));
        }
    }

    let mut keys = Vec::new();
    let mut checks = Vec::new();
    let mut uniques = Vec::new();
    let mut personal = Vec::new();
    let mut subject: Option<Member> = None;
    for (i, field) in fields.iter().enumerate() {
        let member = match &field.ident {
            Some(ident) => Member::Named(ident.clone()),
            None => Member::Unnamed(syn::Index {
                index: i as u32,
                span: field.ty.span(),
            }),
        };
        for attr in &field.attrs {
            if attr.path().is_ident("key") {
                if attr.meta.require_path_only().is_err() {
                    errors.add(syn::Error::new_spanned(
                        &attr.meta,
                        "#[key] takes no arguments: mark each primary key field with a plain #[key]",
                    ));
                }
                if keys.last().is_some_and(|k: &KeyField| k.member == member) {
                    errors.add(syn::Error::new_spanned(attr, "#[key] is given twice"));
                    continue;
                }
                keys.push(KeyField {
                    member: member.clone(),
                    ty: field.ty.clone(),
                });
            } else if attr.path().is_ident("check") {
                match field_check(attr, &member) {
                    Ok(c) => checks.push(c),
                    Err(e) => errors.add(e),
                }
            } else if attr.path().is_ident("unique") {
                match unique(attr, &member, &field.ty) {
                    Ok(u) => uniques.push((u, attr, member.clone())),
                    Err(e) => errors.add(e),
                }
            } else if attr.path().is_ident("table") {
                errors.add(syn::Error::new_spanned(
                    attr,
                    "#[table(..)] goes on the struct, not on a field",
                ));
            } else if attr.path().is_ident("pii") || attr.path().is_ident("category") {
                match category(attr) {
                    Ok(category) => personal.push(PersonalField {
                        member: member.clone(),
                        category,
                    }),
                    Err(e) => errors.add(e),
                }
            } else if attr.path().is_ident("subject") {
                if subject.is_some() || args.subject_key.is_some() {
                    errors.add(syn::Error::new_spanned(
                        attr,
                        "a row has one subject: one #[subject] field, or `subject = key`",
                    ));
                }
                subject = Some(member.clone());
            }
        }
    }
    checks.append(&mut struct_checks);
    let uniques: Vec<UniqueDef> = uniques
        .into_iter()
        .filter_map(|(u, attr, member)| {
            if keys.len() == 1 && keys[0].member == member {
                errors.add(syn::Error::new_spanned(
                    attr,
                    "a table's key is unique already: #[unique] is for other fields",
                ));
                return None;
            }
            Some(u)
        })
        .collect();
    if let Some(span) = args.replicated
        && (args.ordered || args.place_by.is_some())
    {
        errors.add(syn::Error::new(
            span,
            "a replicated table is a hash table with a full copy in every partition: it \
             cannot also be `ordered` or `place_by`",
        ));
    }
    match (&args.key, keys.first()) {
        (None, None) => errors.add(syn::Error::new(
            input.ident.span(),
            format!(
                "{} has no primary key: mark its key field(s) with #[key], or name a key type \
                 kept outside the row with #[table(key = MyKey)]",
                input.ident
            ),
        )),
        (Some(ty), Some(_)) => errors.add(syn::Error::new_spanned(
            ty,
            "the key is either #[key] fields of the row or a `key = Type` kept outside it, \
             not both",
        )),
        _ => {}
    }
    if let Some(path) = &args.placement
        && args.key.is_none()
    {
        errors.add(syn::Error::new_spanned(
            path,
            "`placement = fn` places rows whose key is a `key = Type`; rows with #[key] fields \
             are placed with `place_by = field`",
        ));
    }
    if let (Some(ty), Some(_)) = (&args.key, &args.place_by) {
        errors.add(syn::Error::new_spanned(
            ty,
            "`place_by` names #[key] fields; with `key = Type` use `placement = <fn(&Type)>`",
        ));
    }

    if !personal.is_empty() && subject.is_none() && args.subject_key.is_none() {
        errors.add(syn::Error::new(
            input.ident.span(),
            format!(
                "{} has personal fields but no subject: mark the field naming whose data it is \
                 with #[subject], or say #[table(subject = key)] if the key names it",
                input.ident
            ),
        ));
    }
    let place = match &args.place_by {
        Some(members) => match placement(members, &keys) {
            Ok(p) => p,
            Err(e) => {
                errors.add(e);
                None
            }
        },
        None => None,
    };
    errors.finish()?;

    let ident = &input.ident;
    let vis = &input.vis;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let key_types: Vec<&Type> = keys.iter().map(|k| &k.ty).collect();
    let key_members: Vec<&Member> = keys.iter().map(|k| &k.member).collect();
    let (key_ty, key_expr) = if let Some(ty) = &args.key {
        (quote!(#ty), None)
    } else if keys.len() == 1 {
        let (ty, m) = (key_types[0], key_members[0]);
        (
            quote!(#ty),
            Some(quote!(::core::clone::Clone::clone(&self.#m))),
        )
    } else {
        (
            quote!((#(#key_types,)*)),
            Some(quote!((#(::core::clone::Clone::clone(&self.#key_members),)*))),
        )
    };
    let table_name = args
        .name
        .as_ref()
        .map_or_else(|| text::snake_case(&ident.to_string()), LitStr::value);
    let declare = if args.ordered {
        quote!(ordered_table)
    } else if args.replicated.is_some() {
        quote!(replicated_table)
    } else {
        quote!(table)
    };
    let unique_names = uniques.iter().map(|u| &u.name);
    let unique_values = uniques.iter().map(|u| &u.value);
    let place_call = match (place, &args.placement) {
        (Some((ty, expr)), _) => Some(quote! {
            builder.place_by(table, |key: &#key_ty| -> #ty { #expr });
        }),
        (None, Some(path)) => Some(quote! {
            builder.place_by(table, #path);
        }),
        (None, None) => None,
    };
    let check_fns: Vec<_> = (0..checks.len())
        .map(|i| format_ident!("__txn_check_{}", i))
        .collect();
    let check_names: Vec<&String> = checks.iter().map(|c| &c.name).collect();
    let check_bodies = checks.iter().zip(&check_fns).map(|(c, f)| {
        let body = &c.body;
        quote_spanned! {c.span=>
            #[doc(hidden)]
            #[allow(dead_code)]
            fn #f(&self) -> bool {
                #body
            }
        }
    });
    let kind = if args.ordered {
        "ordered "
    } else if args.replicated.is_some() {
        "replicated "
    } else {
        ""
    };
    let keyed_by = match &args.key {
        Some(ty) => text::tokens_text(quote!(#ty)),
        None => format!("[`{ident}::key`]"),
    };
    let table_doc = format!(
        "Declares the {kind}table `{table_name}` of `service` with rows of this type, keyed by \
         {keyed_by}, with its placement and constraints."
    );
    let key_doc = format!("The primary key of this row in table `{table_name}`.");
    let key_fn = key_expr.map(|key_expr| {
        quote! {
            #[doc = #key_doc]
            #[allow(dead_code)]
            #vis fn key(&self) -> #key_ty {
                #key_expr
            }
        }
    });

    let personal_fields = personal.iter().map(|p| {
        let (name, category) = (text::member_name(&p.member), &p.category);
        quote!((#name, #category))
    });
    let personal_members = personal.iter().map(|p| &p.member);
    let subject_expr = match (&subject, &args.subject_key) {
        (Some(member), _) => quote!(row.#member),
        (None, Some(expr)) => quote!(#expr),
        (None, None) => quote!(key),
    };
    let personal_call = (!personal.is_empty()).then(|| {
        quote! {
            builder.personal_data(
                table,
                <Self as ::txn::governance::Governed>::PERSONAL_FIELDS,
                |key: &#key_ty, row: &Self| {
                    let _ = (&key, &row);
                    ::std::string::ToString::to_string(&#subject_expr)
                },
                |row: &mut Self| {
                    #(row.#personal_members = ::core::default::Default::default();)*
                },
            );
        }
    });
    Ok(quote! {
        impl #impl_generics ::txn::governance::Governed for #ident #ty_generics #where_clause {
            const PERSONAL_FIELDS: &'static [(&'static str, &'static str)] = &[#(#personal_fields,)*];
        }

        impl #impl_generics #ident #ty_generics #where_clause {
            #[doc = #table_doc]
            #vis fn table<__A: ::txn::App>(
                builder: &mut ::txn::AppBuilder<__A>,
                service: ::txn::ServiceRef,
            ) -> ::txn::Table<#key_ty, Self> {
                let table = builder.#declare::<#key_ty, Self>(service, #table_name);
                #place_call
                #(builder.check(table, #check_names, |row: &Self| row.#check_fns());)*
                #(builder.unique(table, #unique_names, |row: &Self| #unique_values);)*
                #personal_call
                table
            }

            #key_fn

            #(#check_bodies)*
        }
    })
}

fn parse_table_args(attr: &syn::Attribute, args: &mut TableArgs) -> syn::Result<()> {
    if let Meta::Path(_) = attr.meta {
        return Err(syn::Error::new_spanned(
            attr,
            "#[table] needs arguments: `name = \"..\"`, `ordered`, `replicated`, \
             `place_by = <key field>`",
        ));
    }
    attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("name") {
            if args.name.is_some() {
                return Err(meta.error("the table's name is given twice"));
            }
            args.name = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("ordered") {
            if args.ordered {
                return Err(meta.error("`ordered` is given twice"));
            }
            args.ordered = true;
        } else if meta.path.is_ident("replicated") {
            if args.replicated.is_some() {
                return Err(meta.error("`replicated` is given twice"));
            }
            args.replicated = Some(meta.path.span());
        } else if meta.path.is_ident("place_by") {
            if args.place_by.is_some() {
                return Err(meta.error("`place_by` is given twice"));
            }
            let members = if meta.input.peek(Token![=]) {
                vec![meta.value()?.parse::<Member>()?]
            } else {
                let content;
                syn::parenthesized!(content in meta.input);
                Punctuated::<Member, Token![,]>::parse_terminated(&content)?
                    .into_iter()
                    .collect()
            };
            args.place_by = Some(members);
        } else if meta.path.is_ident("key") {
            if args.key.is_some() {
                return Err(meta.error("`key` is given twice"));
            }
            args.key = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("subject") {
            let value: Expr = meta.value()?.parse()?;
            let on_key = match &value {
                Expr::Path(p) => p.path.is_ident("key"),
                Expr::Field(f) => matches!(&*f.base, Expr::Path(p) if p.path.is_ident("key")),
                _ => false,
            };
            if !on_key {
                return Err(syn::Error::new_spanned(
                    &value,
                    "`subject = key` (or `key.<field>`) says the row's key names whose data it \
                     is; otherwise mark that field of the row with #[subject]",
                ));
            }
            args.subject_key = Some(value);
        } else if meta.path.is_ident("placement") {
            if args.placement.is_some() {
                return Err(meta.error("`placement` is given twice"));
            }
            args.placement = Some(meta.value()?.parse()?);
        } else {
            return Err(meta.error(format!(
                "unknown table argument `{}`: expected `name = \"..\"`, `ordered`, \
                 `replicated`, `place_by = <key field>`, `key = <key type>` or \
                 `placement = <fn(&key) -> placement value>`",
                text::path_text(&meta.path)
            )));
        }
        Ok(())
    })
}

/// The type and expression (over `key: &Key`) that `place_by` names, or `None` for the whole
/// key (the default placement).
fn placement(
    members: &[Member],
    keys: &[KeyField],
) -> syn::Result<Option<(TokenStream, TokenStream)>> {
    let mut positions = Vec::new();
    for m in members {
        match keys.iter().position(|k| k.member == *m) {
            Some(p) => positions.push(p),
            None => {
                return Err(syn::Error::new(
                    m.span(),
                    format!(
                        "place_by names `{}`, which is not a #[key] field: rows are placed by \
                         (part of) their key, so that the key alone says where a row lives",
                        quote!(#m)
                    ),
                ));
            }
        }
    }
    if positions.is_empty() {
        return Err(syn::Error::new(
            Span::call_site(),
            "place_by needs at least one #[key] field",
        ));
    }
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() == keys.len() {
        return Ok(None);
    }
    let single = keys.len() == 1;
    let part = |p: usize| {
        if single {
            quote!(::core::clone::Clone::clone(key))
        } else {
            let i = syn::Index::from(p);
            quote!(::core::clone::Clone::clone(&key.#i))
        }
    };
    if let [p] = positions[..] {
        let ty = &keys[p].ty;
        Ok(Some((quote!(#ty), part(p))))
    } else {
        let types = positions.iter().map(|&p| &keys[p].ty);
        let parts = positions.iter().map(|&p| part(p));
        Ok(Some((quote!((#(#types,)*)), quote!((#(#parts,)*)))))
    }
}

/// Parses `expr` or `expr, name = "..."`.
fn parse_check_args(attr: &syn::Attribute) -> syn::Result<(Expr, Option<LitStr>)> {
    let Meta::List(list) = &attr.meta else {
        return Err(syn::Error::new_spanned(
            attr,
            "#[check] needs a condition, e.g. #[check(self.qty >= 0)] on the struct or \
             #[check(0..)] on a field",
        ));
    };
    list.parse_args_with(|input: syn::parse::ParseStream| {
        let expr: Expr = input.parse()?;
        let mut name = None;
        if input.parse::<Option<Token![,]>>()?.is_some() && !input.is_empty() {
            let key: syn::Ident = input.parse()?;
            if key != "name" {
                return Err(syn::Error::new(
                    key.span(),
                    "expected `name = \"..\"` after the check's condition",
                ));
            }
            input.parse::<Token![=]>()?;
            name = Some(input.parse()?);
            input.parse::<Option<Token![,]>>()?;
        }
        Ok((expr, name))
    })
}

fn args_text(attr: &syn::Attribute) -> String {
    match &attr.meta {
        Meta::List(list) => text::attribute_args_text(&list.delimiter, &list.tokens),
        _ => String::new(),
    }
}

/// `#[check(<bool expression over self>)]` on the struct.
fn struct_check(attr: &syn::Attribute) -> syn::Result<CheckDef> {
    let (expr, name) = parse_check_args(attr)?;
    let name = match name {
        Some(n) => n.value(),
        None => text::check_name(&args_text(attr)),
    };
    Ok(CheckDef {
        name,
        span: expr.span(),
        body: quote!(#expr),
    })
}

/// `#[check(<range>)]` on a field: the field's value must lie in the range.
fn field_check(attr: &syn::Attribute, member: &Member) -> syn::Result<CheckDef> {
    let (expr, name) = parse_check_args(attr)?;
    let Expr::Range(range) = &expr else {
        return Err(syn::Error::new_spanned(
            &expr,
            format!(
                "a check on a field is the range its value must lie in, like `0..` or \
                 `1..=100`; put other conditions on the struct: #[check({})]",
                condition_hint(&expr, member)
            ),
        ));
    };
    let field = text::member_name(member);
    let name = match name {
        Some(n) => n.value(),
        None => format!("{field} in {}", args_text(attr)),
    };
    let span = range.span();
    Ok(CheckDef {
        name,
        span,
        body: quote_spanned! {span=>
            ::core::ops::RangeBounds::contains(&(#range), &self.#member)
        },
    })
}

/// The user's condition rewritten over `self.<field>`, for the error message's suggestion.
fn condition_hint(expr: &Expr, member: &Member) -> String {
    let text = text::tokens_text(quote!(#expr));
    let field = quote!(#member).to_string();
    if text.contains(&field) {
        text.replace(&field, &format!("self.{field}"))
    } else {
        format!("self.{field} ...")
    }
}

/// `#[unique]` or `#[unique(name = "..")]` on a field: no two rows hold the same value. A field
/// of type `Option<..>` constrains only the rows where it is `Some`.
fn unique(attr: &syn::Attribute, member: &Member, ty: &Type) -> syn::Result<UniqueDef> {
    let mut name = None;
    if let Meta::List(_) = attr.meta {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                name = Some(meta.value()?.parse::<LitStr>()?.value());
                Ok(())
            } else {
                Err(meta.error("#[unique] takes only `name = \"..\"`"))
            }
        })?;
    }
    let optional = matches!(ty, Type::Path(p) if p.qself.is_none()
        && p.path.segments.last().is_some_and(|s| s.ident == "Option"));
    let value = if optional {
        quote!(::core::clone::Clone::clone(&row.#member))
    } else {
        quote!(::core::option::Option::Some(::core::clone::Clone::clone(&row.#member)))
    };
    Ok(UniqueDef {
        name: name.unwrap_or_else(|| text::member_name(member)),
        value,
    })
}

/// The category of `#[pii]` (`pii`) or `#[category(name)]`.
fn category(attr: &syn::Attribute) -> syn::Result<String> {
    if attr.path().is_ident("pii") {
        attr.meta.require_path_only().map_err(|_| {
            syn::Error::new_spanned(
                &attr.meta,
                "#[pii] takes no arguments; for another category write #[category(card)]",
            )
        })?;
        return Ok("pii".to_string());
    }
    let name: syn::Ident = attr.parse_args().map_err(|e| {
        syn::Error::new(
            e.span(),
            "#[category(..)] names one data category, e.g. #[category(card)]",
        )
    })?;
    Ok(name.to_string())
}
