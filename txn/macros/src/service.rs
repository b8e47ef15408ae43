//! `#[service]` and `#[handler]`: a service's handlers as methods of one `impl` block, each
//! taking one event type. The macro generates the service's contract (its event enum, the
//! `txn::Service` and `txn::EventOf` impls) and a `register` method wiring the handlers into one
//! `AppBuilder::handler` dispatcher.

use crate::errors::Errors;
use crate::text;
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ImplItem, ImplItemFn, Item, PathArguments, Type};

/// The argument the service macro leaves on each `#[handler]` it consumed: the `handler`
/// attribute then knows it sits inside a service and expands to nothing. Keeping the attribute
/// (rather than stripping it) keeps the user's `use ..::handler` import in use.
const INSIDE_SERVICE: &str = "__txn_inside_service";

/// `#[service(..)]` arguments.
#[derive(Default)]
struct ServiceArgs {
    app: Option<Type>,
    /// The routing key type (`key = u64`): every event sent by key carries one.
    key: Option<Type>,
    /// Visibility of the generated event enum (`vis = pub(crate)`; default `pub`).
    vis: Option<syn::Visibility>,
}

/// `#[handler]`, `#[handler(internal)]`, `#[handler(purpose = "..")]`, or both.
#[derive(Default)]
struct HandlerArgs {
    /// Only handlers may emit this event; clients are refused it.
    internal: bool,
    /// The purposes the handler serves (`purpose = "checkout"` or `purposes("a", "b")`).
    purposes: Vec<String>,
}

impl Parse for HandlerArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut args = HandlerArgs::default();
        let arguments = "a handler's event type is its event parameter's type; the arguments \
                         of #[handler] are `internal` (only handlers may emit the event) and \
                         `purpose = \"..\"` / `purposes(\"..\", ..)` (what it uses personal \
                         data for)";
        while !input.is_empty() {
            let word: syn::Ident = input
                .parse()
                .map_err(|e| syn::Error::new(e.span(), arguments))?;
            if word == "internal" {
                args.internal = true;
            } else if word == "purpose" {
                input.parse::<syn::Token![=]>()?;
                args.purposes.push(input.parse::<syn::LitStr>()?.value());
            } else if word == "purposes" {
                let content;
                syn::parenthesized!(content in input);
                let list =
                    syn::punctuated::Punctuated::<syn::LitStr, syn::Token![,]>::parse_terminated(
                        &content,
                    )?;
                args.purposes.extend(list.iter().map(syn::LitStr::value));
            } else {
                return Err(syn::Error::new(word.span(), arguments));
            }
            if input.is_empty() {
                break;
            }
            input.parse::<syn::Token![,]>()?;
        }
        Ok(args)
    }
}

/// One `#[handler]` method, checked.
struct HandlerDef {
    method: syn::Ident,
    /// `(table field, its token)` of each `ctx.get(self.<field>, ..)` (or `scan*`, `lookup`)
    /// written directly in the handler's body: the reads the build-time purpose check sees.
    direct_reads: Vec<syn::Ident>,
    args: HandlerArgs,
    /// The event parameter's type, behind its `&` if it has one.
    event: syn::TypePath,
    /// Whether the handler takes the event by value (it receives a clone).
    by_value: bool,
    /// The error type's span: an error type that is not `Into<txn::Abort>` is reported there.
    output: Span,
}

impl HandlerDef {
    /// The event type's name: its variant in the service's event enum and its kind.
    fn variant(&self) -> &syn::Ident {
        &self.event.path.segments.last().expect("checked").ident
    }
}

fn parse_service_args(attr: TokenStream, errors: &mut Errors) -> ServiceArgs {
    let mut args = ServiceArgs::default();
    let parser = syn::meta::parser(|meta| {
        let once = |given: bool| {
            if given {
                Err(meta.error(format!("`{}` is given twice", text::path_text(&meta.path))))
            } else {
                Ok(())
            }
        };
        if meta.path.is_ident("app") {
            once(args.app.is_some())?;
            args.app = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("key") {
            once(args.key.is_some())?;
            args.key = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("vis") {
            once(args.vis.is_some())?;
            args.vis = Some(meta.value()?.parse()?);
        } else {
            return Err(meta.error(format!(
                "unknown service argument `{}`: they are `key = <routing key type>`, \
                 `app = <App type>` and `vis = <visibility of the generated event enum>`",
                text::path_text(&meta.path)
            )));
        }
        Ok(())
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, attr) {
        errors.add(e);
    }
    args
}

pub fn service(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let args = parse_service_args(attr, &mut errors);

    let mut imp = match syn::parse2::<Item>(item)? {
        Item::Impl(imp) if imp.trait_.is_none() => imp,
        other => return Ok(misplaced(other, errors)),
    };

    let Handlers {
        handlers,
        ctx_app,
        user_register,
    } = collect_handlers(&mut imp, &mut errors);
    if handlers.is_empty() && errors.is_empty() {
        errors.add(syn::Error::new(
            imp.impl_token.span,
            "this #[service] has no handlers: mark the methods that handle events with \
             #[handler], e.g. `#[handler] fn deposit(&self, ctx: &mut TxnCtx<'_, MyApp>, ev: \
             &Deposit) -> HandlerResult`",
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
    if args.key.is_none() && !handlers.is_empty() {
        errors.add(syn::Error::new(
            Span::call_site(),
            "say the type of key that routes events to this service's partitions: \
             #[service(key = u64)]",
        ));
    }
    if !imp.generics.params.is_empty() {
        errors.add(syn::Error::new_spanned(
            &imp.generics,
            "a #[service] cannot be generic: its events go into the application's log",
        ));
    }
    let self_ty = &imp.self_ty;
    // On a mistake, keep the impl block and, if the application is known, the contract of
    // the handlers that are right (with a stub `register`), so that only the mistake is
    // reported, not every use of the service.
    let vis = args.vis.unwrap_or_else(|| syn::parse_quote!(pub));
    if let Err(e) = errors.finish() {
        let e = e.to_compile_error();
        // A missing key is reported above; `()` stands in for it.
        let key = args.key.unwrap_or_else(|| syn::parse_quote!(()));
        let generic = !imp.generics.params.is_empty();
        let stub = app.filter(|_| !generic).map(|app| {
            let register = if user_register {
                Register::Omit
            } else {
                Register::Stub
            };
            contract(self_ty, &app, &key, &vis, &handlers, register)
        });
        let stub = stub.transpose().unwrap_or(None);
        return Ok(quote!(#e #imp #stub));
    }
    let app = app.expect("checked above");
    let key = args.key.expect("checked above");
    let contract = contract(self_ty, &app, &key, &vis, &handlers, Register::Dispatch)?;
    Ok(quote! {
        #imp
        #contract
    })
}

/// `#[service]` on something other than an inherent impl block: the error, and the item kept so
/// that only the misplaced attribute is reported.
fn misplaced(other: Item, mut errors: Errors) -> TokenStream {
    let (span, message) = match &other {
        Item::Impl(imp) => (
            imp.trait_
                .as_ref()
                .map_or(imp.impl_token.span, |t| t.1.span()),
            "#[service] goes on an inherent `impl` block (`impl MyService { .. }`), not on a \
             trait implementation",
        ),
        _ => (
            item_keyword_span(&other),
            "#[service] goes on an `impl` block whose methods are marked #[handler], e.g. \
             `#[service(key = u64)] impl Accounts { #[handler] fn deposit(..) }`",
        ),
    };
    errors.add(syn::Error::new(span, message));
    let err = errors.finish().unwrap_err().into_compile_error();
    quote!(#err #other)
}

/// The `#[handler]` methods of a service's impl block, checked, and what the rest of the
/// expansion needs to know about the block's methods.
#[derive(Default)]
struct Handlers {
    /// The handlers without mistakes.
    handlers: Vec<HandlerDef>,
    /// The application type as read off any handler, even a faulty one (for the stub).
    ctx_app: Option<Type>,
    /// Whether the user wrote a method named `register` (then the stub has none).
    user_register: bool,
}

/// Checks every `#[handler]` method of `imp` (adding its mistakes to `errors`) and marks its
/// attributes so that the `handler` macro accepts them.
fn collect_handlers(imp: &mut syn::ItemImpl, errors: &mut Errors) -> Handlers {
    let mut found = Handlers::default();
    for item in &mut imp.items {
        let ImplItem::Fn(f) = item else { continue };
        if f.sig.ident == "register" {
            found.user_register = true;
            errors.add(syn::Error::new_spanned(
                &f.sig.ident,
                "#[service] generates the method `register` (which installs the handlers): \
                 give this method another name",
            ));
        }
        let Some(attr_idx) = f.attrs.iter().position(is_handler_attr) else {
            continue;
        };
        if found.ctx_app.is_none() {
            found.ctx_app = f.sig.inputs.iter().find_map(|i| match i {
                FnArg::Typed(t) => app_of_ctx(&t.ty),
                FnArg::Receiver(_) => None,
            });
        }
        match handler_def(f, attr_idx) {
            Ok(h) => {
                let name = h.variant().to_string();
                if let Some(first) = found.handlers.iter().find(|o| *o.variant() == name) {
                    errors.add(syn::Error::new_spanned(
                        &h.event,
                        format!(
                            "{name} already has a handler, `{}`: an event type runs one handler \
                             per service (and event type names are unique within a service)",
                            first.method
                        ),
                    ));
                } else {
                    found.handlers.push(h);
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
                "a method has one #[handler] attribute; an event type runs one method",
            ));
        }
        // Leave the attributes in place, marked, so that the `handler` macro accepts them.
        let marker = format_ident!("{}", INSIDE_SERVICE);
        for attr in f.attrs.iter_mut().filter(|a| is_handler_attr(a)) {
            let path = attr.path().clone();
            *attr = syn::parse_quote_spanned!(attr.span()=> #[#path(#marker)]);
        }
    }
    found
}

/// What `register` the contract of a service gets.
#[derive(Clone, Copy, PartialEq)]
enum Register {
    /// The real one: installs the handlers.
    Dispatch,
    /// A service with mistakes: the same signature, so that its uses compile.
    Stub,
    /// A service with mistakes that defines a method `register` itself.
    Omit,
}

/// The service's event enum, its `txn::Service` and `txn::EventOf` impls, and `register`.
fn contract(
    self_ty: &Type,
    app: &Type,
    key: &Type,
    vis: &syn::Visibility,
    handlers: &[HandlerDef],
    register_kind: Register,
) -> syn::Result<TokenStream> {
    let Type::Path(self_path) = self_ty else {
        return Err(syn::Error::new_spanned(
            self_ty,
            "#[service] goes on `impl MyService { .. }` for a named type",
        ));
    };
    let self_ident = &self_path.path.segments.last().expect("a path").ident;
    let service_name = self_ident.to_string();
    let enum_ident = format_ident!("{}Event", self_ident);
    let enum_doc = format!(
        "Every event service [`{service_name}`] handles: one variant per `#[handler]` method \
         (generated by `#[service]`)."
    );
    let variants: Vec<&syn::Ident> = handlers.iter().map(HandlerDef::variant).collect();
    let names: Vec<String> = variants.iter().map(|v| v.to_string()).collect();
    let events: Vec<&syn::TypePath> = handlers.iter().map(|h| &h.event).collect();
    let internal: Vec<bool> = handlers.iter().map(|h| h.args.internal).collect();
    let purposes: Vec<&Vec<String>> = handlers.iter().map(|h| &h.args.purposes).collect();
    let purpose_checks = handlers
        .iter()
        .map(|h| purpose_checks(self_ty, app, h))
        .collect::<Vec<_>>();
    // Each impl carries its handler's event type span: an error about sending an event to the
    // wrong service shows the handler that does take it.
    let event_of = handlers.iter().map(|h| {
        let (event, variant) = (&h.event, h.variant());
        let kind = variant.to_string();
        quote_spanned! {event.span()=>
            impl ::txn::EventOf<#self_ty> for #event {
                const KIND: &'static str = #kind;
                fn into_service_event(self) -> #enum_ident {
                    #enum_ident::#variant(self)
                }
            }
        }
    });
    // Spanned at the event type, so that an event that is not `Deserialize` is reported there.
    let decode_arms = events.iter().zip(&names).map(|(event, name)| {
        quote_spanned! {event.span()=>
            #name => {
                let event: #event = ::txn::__private::serde_json::from_slice(payload)
                    .map_err(|e| ::txn::__private::ingress::bad_payload::<Self>(kind, e))?;
                let key_partition = (&::txn::__private::ingress::KeyProbe::<#event, #key>::new(&event))
                    .probe_key()
                    .map(|key| service.raw().partition_of(key));
                ::txn::__private::ingress::route::<Self, #event>(service, event, key_partition, partition)
            }
        }
    });
    let register = register(&enum_ident, &service_name, app, handlers, register_kind);
    Ok(quote! {
        #[doc = #enum_doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug, ::txn::__private::serde::Serialize, ::txn::__private::serde::Deserialize)]
        #[serde(crate = "::txn::__private::serde")]
        // Public by default while the event types may be private to the crate: outside it the
        // enum can be named but not built, which is all it needs.
        #[allow(private_interfaces)]
        #vis enum #enum_ident {
            #(#variants(#events),)*
        }

        impl ::txn::Service for #self_ty {
            type App = #app;
            type Key = #key;
            type Event = #enum_ident;
            const NAME: &'static str = #service_name;

            fn event_kind(event: &#enum_ident) -> &'static str {
                match *event { #(#enum_ident::#variants(_) => #names,)* }
            }

            fn is_internal(event: &#enum_ident) -> bool {
                match *event { #(#enum_ident::#variants(_) => #internal,)* }
            }

            #[inline]
            fn row_hint(event: &#enum_ident) -> ::core::option::Option<::txn::RowHint> {
                #[allow(unused_imports)]
                use ::txn::__private::ingress::{NoKey as _, ViaKey as _};
                // Through `*event`, as in `event_kind`: a service without handlers has an empty
                // enum, whose reference an empty match does not cover.
                match *event {
                    #(#enum_ident::#variants(ref e) => (&::txn::__private::ingress::KeyProbe::<#events, #key>::new(e))
                        .probe_key()
                        .map(::txn::RowHint::of::<#key>),)*
                }
            }

            fn row_hints(event: &#enum_ident, hints: &mut ::std::vec::Vec<::txn::RowHint>) {
                #[allow(unused_imports)]
                use ::txn::__private::ingress::{NoRowKeys as _, ViaRowKeys as _};
                // Used by every arm; a service without handlers has none (an empty match).
                let _ = &hints;
                match *event {
                    #(#enum_ident::#variants(ref e) => {
                        if !(&::txn::__private::ingress::RowKeysProbe::<#events, #key>::new(e)).probe_row_keys(hints) {
                            hints.extend(<Self as ::txn::Service>::row_hint(event));
                        }
                    })*
                }
            }

            const EVENTS: &'static [::txn::EventInfo] = &[
                #(::txn::EventInfo { kind: #names, internal: #internal },)*
            ];

            const HANDLER_PURPOSES: &'static [(&'static str, &'static [&'static str])] = &[
                #((#names, &[#(#purposes),*]),)*
            ];

            fn request_from_json(
                service: ::txn::Svc<Self>,
                kind: &str,
                payload: &[u8],
                partition: ::core::option::Option<u32>,
            ) -> ::core::result::Result<::txn::Request<#app>, ::txn::IngressError> {
                #[allow(unused_imports)]
                use ::txn::__private::ingress::{NoKey as _, ViaKey as _};
                match kind {
                    #(#decode_arms)*
                    _ => ::core::result::Result::Err(::txn::__private::ingress::unknown_event::<Self>(kind)),
                }
            }
        }

        #(#event_of)*

        #(#purpose_checks)*

        impl #self_ty {
            #register
        }
    })
}

/// The `register` method: installs the handlers as one `AppBuilder::handler` dispatcher, or a
/// stub with the same signature, or nothing.
fn register(
    enum_ident: &syn::Ident,
    service_name: &str,
    app: &Type,
    handlers: &[HandlerDef],
    kind: Register,
) -> TokenStream {
    let signature = quote! {
        pub fn register(self, builder: &mut ::txn::AppBuilder<#app>, service: ::txn::Svc<Self>)
    };
    if kind == Register::Omit {
        return TokenStream::new();
    }
    if kind == Register::Stub {
        return quote! {
            #[allow(dead_code, unused_variables)]
            #signature {
                ::core::unreachable!()
            }
        };
    }
    let arms = handlers.iter().map(|h| arm(enum_ident, h));
    let misrouted = format!("{service_name} received an event of another service: {{:?}}");
    quote! {
        /// Installs this service's `#[handler]` methods as the handler of `service`: each
        /// event runs the method of its type.
        #signature {
            builder.handler(service.raw(), move |ctx, event| {
                match <<#app as ::txn::App>::Event as ::txn::Envelope<Self>>::unwrap(event) {
                    #(#arms)*
                    // Only the untyped `*_raw` calls can deliver another service's event.
                    ::core::option::Option::None => ::core::result::Result::Err(
                        ctx.abort(::std::format!(#misrouted, event)),
                    ),
                }
            });
        }
    }
}

/// The match arm that runs handler `h`.
fn arm(enum_ident: &syn::Ident, h: &HandlerDef) -> TokenStream {
    let variant = h.variant();
    let method = &h.method;
    let event = &h.event;
    // The event binding carries the parameter's span, so that an error about it points there.
    let binding = format_ident!("__txn_event", span = event.span());
    let arg = if h.by_value {
        quote_spanned!(event.span()=> <#event as ::core::clone::Clone>::clone(#binding))
    } else {
        quote!(#binding)
    };
    // A handler may return `Result<(), E>` for its service's own error type: the error becomes
    // an `Abort` through `Into` (a `txn::BusinessError` keeps its kind).
    // The whole conversion carries the error type's span, so that an error type without it
    // is reported there, once.
    let call = quote!(self.#method(ctx, #arg));
    let into_abort = quote_spanned! {h.output=>
        ::core::result::Result::map_err(#call, ::core::convert::Into::<::txn::Abort>::into)
    };
    quote! {
        ::core::option::Option::Some(#enum_ident::#variant(#binding)) => #into_abort,
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
        syn::Meta::Path(_) => Ok(HandlerArgs::default()),
        syn::Meta::List(list) => list.parse_args::<HandlerArgs>(),
        syn::Meta::NameValue(nv) => Err(syn::Error::new_spanned(
            nv,
            "write #[handler], or #[handler(internal)] for an event only handlers may emit",
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
    let event_hint = "`ev: &Deposit` (or `ev: Deposit` for a clone)";
    match sig.receiver() {
        None => errors.add(syn::Error::new_spanned(
            &sig.ident,
            format!(
                "a #[handler] is a method: its parameters are `&self`, then {ctx_hint}, then \
                 its event, {event_hint}"
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
    let has_ctx = matches!(inputs.next(), Some(FnArg::Typed(_)));
    if !has_ctx && sig.receiver().is_some() {
        errors.add(syn::Error::new(
            sig.paren_token.span.join(),
            format!(
                "a #[handler] takes the transaction context after `&self`, then its event: \
                 {ctx_hint}, {event_hint}"
            ),
        ));
    }
    let event = match (inputs.next(), inputs.next()) {
        (Some(FnArg::Typed(p)), None) => event_type(&p.ty).map(Some),
        (Some(_), Some(extra)) => Err(syn::Error::new_spanned(
            extra,
            "a #[handler] takes one event after the context: what else it needs travels in \
             the event's fields",
        )),
        // Without a context the message above says what the parameters are.
        _ if !has_ctx => Ok(None),
        _ => Err(syn::Error::new(
            sig.paren_token.span.close(),
            format!("a #[handler] takes its event after the context: {event_hint}"),
        )),
    };
    let event = match event {
        Ok(e) => e,
        Err(e) => {
            errors.add(e);
            None
        }
    };
    if let syn::ReturnType::Default = sig.output {
        errors.add(syn::Error::new(
            sig.paren_token.span.close(),
            "a #[handler] returns `txn::HandlerResult`: `Ok(())`, or `Err(ctx.abort(..))` to \
             abort the transaction",
        ));
    }
    errors.finish()?;
    let (event, by_value) = event.expect("no errors");
    Ok(HandlerDef {
        method: sig.ident.clone(),
        direct_reads: direct_reads(f.block.to_token_stream()),
        args: args.expect("no errors"),
        event,
        by_value,
        output: error_type_span(&sig.output),
    })
}

/// Where the error type of a handler's return type is written: the `E` of `Result<(), E>`,
/// or the whole return type (`HandlerResult`).
fn error_type_span(output: &syn::ReturnType) -> Span {
    let syn::ReturnType::Type(_, ty) = output else {
        return output.span();
    };
    let error = match &**ty {
        Type::Path(p) => p
            .path
            .segments
            .last()
            .and_then(|last| match &last.arguments {
                PathArguments::AngleBracketed(args) => args.args.last(),
                _ => None,
            }),
        _ => None,
    };
    error.map_or_else(|| ty.span(), |e| e.span())
}

/// The event type of a handler's event parameter (`&Deposit` or `Deposit`), and whether it is
/// taken by value.
fn event_type(ty: &Type) -> syn::Result<(syn::TypePath, bool)> {
    let (inner, by_value) = match ty {
        Type::Reference(r) if r.mutability.is_none() => (&*r.elem, false),
        Type::Reference(r) => {
            return Err(syn::Error::new_spanned(
                r,
                "a handler reads its event: take `&Deposit` (or `Deposit` for a clone)",
            ));
        }
        ty => (ty, true),
    };
    match inner {
        Type::Path(p) if p.qself.is_none() && !p.path.segments.is_empty() => {
            Ok((p.clone(), by_value))
        }
        other => Err(syn::Error::new_spanned(
            other,
            "a handler's event is a named type (a struct or enum of your own), e.g. `ev: &Deposit`",
        )),
    }
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

/// The methods of `TxnCtx` that read rows: the calls the build-time purpose check looks for.
const READ_METHODS: &[&str] = &["get", "scan", "scan_limit", "scan_first", "lookup"];

/// The table fields `f` in `<..>.get(self.f, ..)` (and the other `READ_METHODS`) anywhere in
/// `body`, in order, without repeats. Only what is written there: a read inside a helper
/// method the handler calls is checked at run time only.
fn direct_reads(body: TokenStream) -> Vec<syn::Ident> {
    use proc_macro2::TokenTree;
    let mut found: Vec<syn::Ident> = Vec::new();
    let tokens: Vec<TokenTree> = body.into_iter().collect();
    for (i, token) in tokens.iter().enumerate() {
        match token {
            TokenTree::Group(g) => {
                for field in direct_reads(g.stream()) {
                    if !found.contains(&field) {
                        found.push(field);
                    }
                }
            }
            TokenTree::Ident(method) if READ_METHODS.iter().any(|m| method == m) => {
                let after_dot =
                    i > 0 && matches!(&tokens[i - 1], TokenTree::Punct(p) if p.as_char() == '.');
                let Some(TokenTree::Group(args)) = tokens.get(i + 1) else {
                    continue;
                };
                if !after_dot || args.delimiter() != proc_macro2::Delimiter::Parenthesis {
                    continue;
                }
                let inner: Vec<TokenTree> = args.stream().into_iter().take(3).collect();
                if let [
                    TokenTree::Ident(this),
                    TokenTree::Punct(dot),
                    TokenTree::Ident(field),
                ] = &inner[..]
                    && this == "self"
                    && dot.as_char() == '.'
                    && !found.contains(field)
                {
                    found.push(field.clone());
                }
            }
            _ => {}
        }
    }
    found
}

/// One constant per direct read of handler `h`: evaluating it fails the build, with the
/// reason as message, if the row type read has a personal field whose category the
/// application allows for none of the handler's purposes.
fn purpose_checks(self_ty: &Type, app: &Type, h: &HandlerDef) -> TokenStream {
    let purposes = &h.args.purposes;
    let handler = h.method.to_string();
    let checks = h.direct_reads.iter().map(|field| {
        let table = field.to_string();
        quote_spanned! {field.span()=>
            const _: () = {
                const VERDICT: ::txn::governance::Verdict = ::txn::governance::verdict::<#app, #self_ty, _, _>(
                    |service: &#self_ty| &service.#field,
                    &[#(#purposes),*],
                    #handler,
                    #table,
                );
                if let ::core::option::Option::Some(reason) = VERDICT.denied() {
                    ::core::panic!("{}", reason);
                }
            };
        }
    });
    quote!(#(#checks)*)
}
