//! `#[service]` and `#[handler]`: a service's handlers as methods of one `impl` block, wired into
//! a single `AppBuilder::handler` dispatcher by a generated `register` method.

use crate::errors::Errors;
use crate::text;
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ImplItem, ImplItemFn, Item, Pat, PathArguments, Token, Type};

/// The argument the service macro leaves on each `#[handler]` it consumed: the `handler`
/// attribute then knows it sits inside a service and expands to nothing. Keeping the attribute
/// (rather than stripping it) keeps the user's `use ..::handler` import in use.
const INSIDE_SERVICE: &str = "__txn_inside_service";

/// `#[service(..)]` arguments.
#[derive(Default)]
struct ServiceArgs {
    app: Option<Type>,
}

/// `#[handler(Ev::Variant)]` or `#[handler(Ev::Variant { .. })]`.
struct HandlerArgs {
    variant: syn::Path,
    /// `{ .. }`: a struct variant whose fields bind to the parameters by name.
    by_name: bool,
}

impl Parse for HandlerArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let variant: syn::Path = input.parse()?;
        let mut by_name = false;
        if input.peek(syn::token::Brace) {
            let content;
            let brace = syn::braced!(content in input);
            content.parse::<Token![..]>().map_err(|_| {
                syn::Error::new(
                    brace.span.join(),
                    "write `{ .. }`: the handler's parameters name the fields it takes",
                )
            })?;
            if !content.is_empty() {
                return Err(content
                    .error("write `{ .. }`: the handler's parameters name the fields it takes"));
            }
            by_name = true;
        }
        if !input.is_empty() {
            return Err(input.error(
                "expected the event variant this handler runs for, e.g. #[handler(Ev::Deposit)] \
                 or #[handler(Ev::Withdraw { .. })]",
            ));
        }
        Ok(HandlerArgs { variant, by_name })
    }
}

/// A payload parameter of a handler.
struct Param {
    /// Its name, which is the field's for `{ .. }`.
    name: Option<syn::Ident>,
    /// Its type if it is not a reference: the handler receives a clone of the field.
    by_value: Option<Type>,
    /// Its type's span.
    span: Span,
}

/// One `#[handler]` method, checked.
struct HandlerDef {
    method: syn::Ident,
    args: HandlerArgs,
    /// The payload parameters after `ctx`.
    params: Vec<Param>,
    /// The return type's span: an error type that is not `Into<txn::Abort>` is reported there.
    output: Span,
}

pub fn service(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let mut args = ServiceArgs::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("app") {
            if args.app.is_some() {
                return Err(meta.error("`app` is given twice"));
            }
            args.app = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta.error(format!(
                "unknown service argument `{}`: the only one is `app = <your App type>`",
                text::path_text(&meta.path)
            )))
        }
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, attr) {
        errors.add(e);
    }

    let mut imp = match syn::parse2::<Item>(item)? {
        Item::Impl(imp) if imp.trait_.is_none() => imp,
        other => {
            let (span, message) = match &other {
                Item::Impl(imp) => (
                    imp.trait_
                        .as_ref()
                        .map_or(imp.impl_token.span, |t| t.1.span()),
                    "#[service] goes on an inherent `impl` block (`impl MyService { .. }`), not \
                     on a trait implementation",
                ),
                _ => (
                    item_keyword_span(&other),
                    "#[service] goes on an `impl` block whose methods are marked #[handler], \
                     e.g. `#[service] impl Accounts { #[handler(Ev::Deposit)] fn deposit(..) }`",
                ),
            };
            errors.add(syn::Error::new(span, message));
            // Keep the item, so that only the misplaced attribute is reported.
            let err = errors.finish().unwrap_err().into_compile_error();
            return Ok(quote!(#err #other));
        }
    };

    let mut handlers: Vec<HandlerDef> = Vec::new();
    // The application type as read off any handler, even a faulty one (for the stub below).
    let mut ctx_app = None;
    for item in &mut imp.items {
        let ImplItem::Fn(f) = item else { continue };
        let Some(attr_idx) = f.attrs.iter().position(is_handler_attr) else {
            continue;
        };
        if ctx_app.is_none() {
            ctx_app = f.sig.inputs.iter().find_map(|i| match i {
                FnArg::Typed(t) => app_of_ctx(&t.ty),
                FnArg::Receiver(_) => None,
            });
        }
        match handler_def(f, attr_idx) {
            Ok(h) => {
                let name = text::path_text(&h.args.variant);
                if let Some(first) = handlers
                    .iter()
                    .find(|o| text::path_text(&o.args.variant) == name)
                {
                    errors.add(syn::Error::new_spanned(
                        &h.args.variant,
                        format!(
                            "{name} already has a handler, `{}`: an event variant runs one handler",
                            first.method
                        ),
                    ));
                } else {
                    handlers.push(h);
                }
            }
            Err(e) => errors.add(e),
        }
        if let Some(extra) = f
            .attrs
            .iter()
            .skip(attr_idx + 1)
            .find(|a| is_handler_attr(a))
        {
            errors.add(syn::Error::new_spanned(
                extra,
                "a method has one #[handler] attribute; an event variant runs one method",
            ));
        }
        // Leave the attributes in place, marked, so that the `handler` macro accepts them.
        let marker = format_ident!("{}", INSIDE_SERVICE);
        for attr in f.attrs.iter_mut().filter(|a| is_handler_attr(a)) {
            let path = attr.path().clone();
            *attr = syn::parse_quote_spanned!(attr.span()=> #[#path(#marker)]);
        }
    }
    if handlers.is_empty() && errors.is_empty() {
        errors.add(syn::Error::new(
            imp.impl_token.span,
            "this #[service] has no handlers: mark the methods that handle events with \
             #[handler(Ev::Variant)]",
        ));
    }

    let app = match (&args.app, &ctx_app) {
        (Some(app), _) | (None, Some(app)) => Some(app.clone()),
        (None, None) => {
            if !handlers.is_empty() {
                errors.add(syn::Error::new(
                    Span::call_site(),
                    "cannot tell the application type: write each handler's context as \
                     `ctx: &mut TxnCtx<'_, MyApp>` or say #[service(app = MyApp)]",
                ));
            }
            None
        }
    };
    let self_ty = &imp.self_ty;
    let (impl_generics, _, where_clause) = imp.generics.split_for_impl();
    // On a mistake, keep the impl block (and `register`, if its signature is known) so that
    // only the mistake is reported, not every use of the service.
    if let Err(e) = errors.finish() {
        let e = e.to_compile_error();
        let stub = app.map(|app| {
            quote! {
                impl #impl_generics #self_ty #where_clause {
                    #[allow(dead_code, unused_variables)]
                    pub fn register(
                        self,
                        builder: &mut ::txn::AppBuilder<#app>,
                        service: ::txn::ServiceRef,
                    ) {
                        ::core::unreachable!()
                    }
                }
            }
        });
        return Ok(quote!(#e #imp #stub));
    }
    let app = app.expect("checked above");

    let service_name = text::tokens_text(quote!(#self_ty));
    let handled: Vec<String> = handlers
        .iter()
        .map(|h| text::path_text(&h.args.variant))
        .collect();
    let unhandled = format!(
        "{service_name} has no handler for {{:?}} (it handles {})",
        handled.join(", ")
    );
    let arms = handlers.iter().map(arm);
    let register = quote! {
        impl #impl_generics #self_ty #where_clause {
            /// Installs this service's `#[handler]` methods as the handler of `service`: each
            /// event runs the method of its variant; an event of any other variant aborts the
            /// transaction, naming the event.
            pub fn register(
                self,
                builder: &mut ::txn::AppBuilder<#app>,
                service: ::txn::ServiceRef,
            ) {
                builder.handler(service, move |ctx, event| match event {
                    #(#arms)*
                    #[allow(unreachable_patterns)]
                    other => ::core::result::Result::Err(
                        ctx.abort(::std::format!(#unhandled, other)),
                    ),
                });
            }
        }
    };
    Ok(quote! {
        #imp
        #register
    })
}

/// The match arm that runs handler `h`.
fn arm(h: &HandlerDef) -> TokenStream {
    let variant = &h.args.variant;
    let method = &h.method;
    // The pattern's own tokens end where the path ends, so that an error about the pattern
    // underlines the whole variant path in the attribute.
    let end = variant
        .segments
        .last()
        .map_or_else(|| variant.span(), |s| s.ident.span());
    // Each binding carries its parameter's span, so that a type mismatch between the variant's
    // field and the parameter points at the parameter.
    let bindings: Vec<syn::Ident> = h
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| format_ident!("__txn_arg{}", i, span = p.span))
        .collect();
    let pattern = if h.params.is_empty() {
        quote_spanned!(end=> #variant { .. })
    } else if h.args.by_name {
        let fields = h
            .params
            .iter()
            .map(|p| p.name.as_ref().expect("named in handler_def"));
        quote_spanned!(end=> #variant { #(#fields: #bindings,)* .. })
    } else {
        quote_spanned!(end=> #variant(#(#bindings),*))
    };
    let args = h
        .params
        .iter()
        .zip(&bindings)
        .map(|(p, b)| match &p.by_value {
            None => quote!(#b),
            Some(ty) => quote_spanned!(p.span=> <#ty as ::core::clone::Clone>::clone(#b)),
        });
    // A handler may return `Result<(), E>` for its service's own error type: the error becomes
    // an `Abort` through `Into` (a `txn::BusinessError` keeps its kind).
    let into_abort = quote_spanned!(h.output=> ::core::convert::Into::<::txn::Abort>::into);
    quote! {
        #pattern => ::core::result::Result::map_err(self.#method(ctx, #(#args),*), #into_abort),
    }
}

fn is_handler_attr(attr: &syn::Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|s| s.ident == "handler")
}

/// Checks the signature of a `#[handler]` method and reads what the dispatcher needs.
fn handler_def(f: &ImplItemFn, attr_idx: usize) -> syn::Result<HandlerDef> {
    let attr = &f.attrs[attr_idx];
    let sig = &f.sig;
    let mut errors = Errors::default();
    let args = match &attr.meta {
        syn::Meta::List(list) => list.parse_args::<HandlerArgs>(),
        _ => Err(syn::Error::new_spanned(
            attr,
            format!(
                "name the event variant `{}` runs for: #[handler(Ev::Variant)] for a tuple \
                 variant, #[handler(Ev::Variant {{ .. }})] for a struct variant",
                sig.ident
            ),
        )),
    };
    let args = match args {
        Ok(a) => Some(a),
        Err(e) => {
            errors.add(e);
            None
        }
    };
    if let Some(a) = &sig.asyncness {
        errors.add(syn::Error::new_spanned(
            a,
            "a #[handler] cannot be async: it runs inside the transaction, to completion, \
             without waiting",
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.add(syn::Error::new_spanned(
            &sig.generics,
            "a #[handler] cannot be generic",
        ));
    }
    let ctx_hint = "`ctx: &mut TxnCtx<'_, MyApp>`";
    match sig.receiver() {
        None => errors.add(syn::Error::new_spanned(
            &sig.ident,
            format!(
                "a #[handler] is a method: its parameters are `&self`, then {ctx_hint}, then \
                 the event's payload"
            ),
        )),
        Some(r) if r.colon_token.is_some() || r.reference.is_none() || r.mutability.is_some() => {
            errors.add(syn::Error::new_spanned(
                r,
                "a #[handler] takes `&self`: handlers run in many partitions at once, so a \
                 service's state lives in its tables, not in `self`",
            ));
        }
        Some(_) => {}
    }
    let mut inputs = sig.inputs.iter().skip(1);
    match inputs.next() {
        Some(FnArg::Typed(_)) => {}
        _ if sig.receiver().is_some() => errors.add(syn::Error::new(
            sig.paren_token.span.join(),
            format!("a #[handler] takes the transaction context after `&self`: {ctx_hint}"),
        )),
        _ => {}
    }
    let by_name = args.as_ref().is_some_and(|a| a.by_name);
    let mut params = Vec::new();
    for input in inputs {
        let FnArg::Typed(p) = input else { continue };
        let by_value = match &*p.ty {
            Type::Reference(_) => None,
            ty => Some(ty.clone()),
        };
        let name = match &*p.pat {
            Pat::Ident(i) if i.by_ref.is_none() && i.subpat.is_none() => Some(i.ident.clone()),
            _ => None,
        };
        if by_name && name.is_none() {
            errors.add(syn::Error::new_spanned(
                &p.pat,
                "with #[handler(Ev::Variant { .. })] each parameter is named after the field \
                 of the variant it receives",
            ));
        }
        // The type, or the type behind `&`: a mismatch points at `u32` in `amount: &u32`.
        let span = match &*p.ty {
            Type::Reference(r) => r.elem.span(),
            ty => ty.span(),
        };
        params.push(Param {
            name,
            by_value,
            span,
        });
    }
    if let syn::ReturnType::Default = sig.output {
        errors.add(syn::Error::new(
            sig.paren_token.span.close(),
            "a #[handler] returns `txn::HandlerResult`: `Ok(())`, or `Err(ctx.abort(..))` to \
             abort the transaction",
        ));
    }
    errors.finish()?;
    Ok(HandlerDef {
        method: sig.ident.clone(),
        args: args.expect("no errors"),
        params,
        output: sig.output.span(),
    })
}

/// The `A` of `&mut TxnCtx<'_, A>` (any path ending in `TxnCtx`).
fn app_of_ctx(ty: &Type) -> Option<Type> {
    let Type::Reference(r) = ty else { return None };
    let Type::Path(p) = &*r.elem else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "TxnCtx" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args.iter().rev().find_map(|a| match a {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    })
}

/// Where to point at an item that is not an `impl` block.
fn item_keyword_span(item: &Item) -> Span {
    match item {
        Item::Struct(s) => s.struct_token.span,
        Item::Enum(e) => e.enum_token.span,
        Item::Fn(f) => f.sig.fn_token.span,
        Item::Trait(t) => t.trait_token.span,
        Item::Mod(m) => m.mod_token.span,
        other => other.span(),
    }
}

/// `#[handler]`: consumed by `#[service]`; anywhere else it is a mistake.
pub fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    let inside = syn::parse2::<syn::Ident>(attr).is_ok_and(|i| i == INSIDE_SERVICE);
    if inside {
        return item;
    }
    let err = syn::Error::new(
        Span::call_site(),
        "#[handler] marks a method of an `impl` block with #[service] on it: add #[service] \
         to the impl block, which wires its handlers into a generated `register` method",
    )
    .to_compile_error();
    quote!(#err #item)
}
