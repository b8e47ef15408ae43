//! `#[derive(Event)]` (an event's routing key, from its `#[key]` field) and `#[app]` (the
//! application type and the envelope enum the log stores, one variant per service).

use crate::errors::Errors;
use crate::text;
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Type};

/// `#[derive(Event)]`: `impl txn::KeyOf<FieldType>` returning the `#[key]` field.
pub fn derive_event(input: DeriveInput) -> syn::Result<TokenStream> {
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "#[derive(Event)] goes on a struct whose `#[key]` field routes it; for an enum, or \
             a key computed from several fields, implement `txn::KeyOf<K>` by hand",
        ));
    };
    let mut keys = Vec::new();
    for (i, field) in data.fields.iter().enumerate() {
        if let Some(attr) = field.attrs.iter().find(|a| a.path().is_ident("key")) {
            if !matches!(attr.meta, syn::Meta::Path(_)) {
                return Err(syn::Error::new_spanned(
                    attr,
                    "write `#[key]`, without arguments",
                ));
            }
            let member = match &field.ident {
                Some(ident) => syn::Member::Named(ident.clone()),
                None => syn::Member::Unnamed(syn::Index::from(i)),
            };
            keys.push((member, &field.ty));
        }
    }
    let ((member, ty), rest) = match keys.split_first() {
        Some(split) => split,
        None if matches!(data.fields, Fields::Unit) => {
            return Err(syn::Error::new_spanned(
                &input.ident,
                "a unit struct has no field to route it by: send it to explicit partitions \
                 (`emit_to_partition`, `broadcast`, `Svc::request_to_partition`), which need no \
                 key and no #[derive(Event)], or implement `txn::KeyOf<K>` by hand",
            ));
        }
        None => {
            return Err(syn::Error::new(
                data.struct_token.span,
                "mark the field that routes this event with `#[key]` (its type must be the \
                 service's key type)",
            ));
        }
    };
    if let Some((extra, _)) = rest.first() {
        return Err(syn::Error::new_spanned(
            extra,
            "an event has one `#[key]` field; for a key made of several fields, implement \
             `txn::KeyOf<K>` by hand",
        ));
    }
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    // The impl carries the key field's type span: an error about a key of the wrong type
    // shows the key the event does have there.
    Ok(quote_spanned! {ty.span()=>
        impl #impl_generics ::txn::KeyOf<#ty> for #ident #ty_generics #where_clause {
            fn key(&self) -> &#ty {
                &self.#member
            }
        }
    })
}

/// `#[app(..)]` arguments.
#[derive(Default)]
struct AppArgs {
    services: Vec<syn::Path>,
    output: Option<Type>,
    /// The envelope enum's name (default: `<App>Event`).
    event: Option<syn::Ident>,
    /// `allow(pii = ["checkout"], ..)`: the purposes each personal-data category may serve.
    allow: Vec<(String, Vec<String>)>,
}

fn parse_app_args(attr: TokenStream, errors: &mut Errors) -> AppArgs {
    let mut args = AppArgs::default();
    let parser =
        syn::meta::parser(|meta| {
            if meta.path.is_ident("services") {
                meta.parse_nested_meta(|service| {
                    args.services.push(service.path);
                    Ok(())
                })
            } else if meta.path.is_ident("output") {
                args.output = Some(meta.value()?.parse()?);
                Ok(())
            } else if meta.path.is_ident("event") {
                args.event = Some(meta.value()?.parse()?);
                Ok(())
            } else if meta.path.is_ident("allow") {
                meta.parse_nested_meta(|category| {
                let name = text::path_text(&category.path);
                let list: syn::ExprArray = category.value()?.parse()?;
                let mut purposes = Vec::new();
                for e in &list.elems {
                    match e {
                        syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => {
                            purposes.push(s.value());
                        }
                        other => {
                            return Err(syn::Error::new_spanned(
                                other,
                                "a purpose is a string: allow(pii = [\"checkout\", \"support\"])",
                            ));
                        }
                    }
                }
                args.allow.push((name, purposes));
                Ok(())
            })
            } else {
                Err(meta.error(format!(
                    "unknown app argument `{}`: they are `services(A, B, ..)`, `output = <type>`, \
                 `event = <name of the generated envelope enum>` and `allow(<category> = \
                 [\"<purpose>\", ..], ..)`",
                    text::path_text(&meta.path)
                )))
            }
        });
    if let Err(e) = syn::parse::Parser::parse2(parser, attr) {
        errors.add(e);
    }
    args
}

/// `#[app(services(A, B), output = O)] struct MyApp;`: the `txn::App` impl and the envelope.
pub fn app(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let args = parse_app_args(attr, &mut errors);
    let item: syn::ItemStruct = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "#[app(..)] goes on a unit struct naming the application: `pub struct MyApp;`",
        )
    })?;
    if !matches!(item.fields, Fields::Unit) || !item.generics.params.is_empty() {
        errors.add(syn::Error::new_spanned(
            &item.ident,
            "#[app(..)] goes on a unit struct without generics: `pub struct MyApp;`",
        ));
    }
    if args.services.is_empty() {
        errors.add(syn::Error::new(
            Span::call_site(),
            "name the application's services: #[app(services(Accounts, Assets), output = ..)]",
        ));
    }
    let mut seen = std::collections::BTreeMap::new();
    for path in &args.services {
        let name = path.segments.last().expect("a path").ident.to_string();
        if seen.insert(name.clone(), ()).is_some() {
            errors.add(syn::Error::new_spanned(
                path,
                format!("{name} is named twice (service type names are unique in an app)"),
            ));
        }
    }
    errors.finish()?;
    let app = &item.ident;
    let vis = &item.vis;
    let envelope = args.event.unwrap_or_else(|| format_ident!("{}Event", app));
    let output = args.output.unwrap_or_else(|| syn::parse_quote!(()));
    let services = &args.services;
    let variants: Vec<&syn::Ident> = services
        .iter()
        .map(|p| &p.segments.last().expect("a path").ident)
        .collect();
    let categories: Vec<&String> = args.allow.iter().map(|(c, _)| c).collect();
    let allowed: Vec<&Vec<String>> = args.allow.iter().map(|(_, p)| p).collect();
    let doc = format!(
        "Every event of [`{app}`], as the epoch log stores it: one variant per service \
         (generated by `#[app]`; build events as the services' own types)."
    );
    Ok(quote! {
        #item

        #[doc = #doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug, ::txn::__private::serde::Serialize, ::txn::__private::serde::Deserialize)]
        #[serde(crate = "::txn::__private::serde")]
        #vis enum #envelope {
            #(#variants(<#services as ::txn::Service>::Event),)*
        }

        impl ::txn::App for #app {
            type Event = #envelope;
            type Output = #output;
            const PURPOSES_ALLOWED: &'static [(&'static str, &'static [&'static str])] = &[
                #((#categories, &[#(#allowed),*]),)*
            ];

            fn event_kind(event: &#envelope) -> &'static str {
                match event {
                    #(#envelope::#variants(e) => <#services as ::txn::Service>::event_kind(e),)*
                }
            }

            fn is_internal(event: &#envelope) -> bool {
                match event {
                    #(#envelope::#variants(e) => <#services as ::txn::Service>::is_internal(e),)*
                }
            }

            #[inline]
            fn row_hint(event: &#envelope) -> ::core::option::Option<::txn::RowHint> {
                match event {
                    #(#envelope::#variants(e) => <#services as ::txn::Service>::row_hint(e),)*
                }
            }

            fn row_hints(event: &#envelope, hints: &mut ::std::vec::Vec<::txn::RowHint>) {
                match event {
                    #(#envelope::#variants(e) => <#services as ::txn::Service>::row_hints(e, hints),)*
                }
            }
        }

        #(
            impl ::txn::Envelope<#services> for #envelope {
                fn wrap(event: <#services as ::txn::Service>::Event) -> Self {
                    #envelope::#variants(event)
                }
                #[allow(unreachable_patterns)]
                fn unwrap(&self) -> ::core::option::Option<&<#services as ::txn::Service>::Event> {
                    match self {
                        #envelope::#variants(e) => ::core::option::Option::Some(e),
                        _ => ::core::option::Option::None,
                    }
                }
            }
        )*
    })
}
