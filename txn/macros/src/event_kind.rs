//! `#[derive(EventKind)]`: the name of an event's variant, for metrics, logs, abort reasons and
//! precedence rules, and whether it is internal (`#[internal]`: only handlers may emit it).

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput};

pub fn derive(input: DeriveInput) -> syn::Result<TokenStream> {
    let Data::Enum(data) = &input.data else {
        let span = match &input.data {
            Data::Struct(s) => s.struct_token.span,
            Data::Union(u) => u.union_token.span,
            Data::Enum(_) => unreachable!(),
        };
        return Err(syn::Error::new(
            span,
            "#[derive(EventKind)] needs an enum: the kind of an event is the name of its variant",
        ));
    };
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let names: Vec<String> = data.variants.iter().map(|v| v.ident.to_string()).collect();
    let variants: Vec<&syn::Ident> = data.variants.iter().map(|v| &v.ident).collect();
    let mut internal = Vec::with_capacity(variants.len());
    for v in &data.variants {
        internal.push(is_internal(v)?);
    }
    let (body, internal_body) = if data.variants.is_empty() {
        (quote!(match *self {}), quote!(match *self {}))
    } else {
        (
            quote!(match self { #(Self::#variants { .. } => #names,)* }),
            quote!(match self { #(Self::#variants { .. } => #internal,)* }),
        )
    };
    Ok(quote! {
        impl #impl_generics #ident #ty_generics #where_clause {
            /// The name of every variant, in declaration order.
            #[allow(dead_code)]
            pub const KINDS: &'static [&'static str] = &[#(#names),*];

            /// The name of this event's variant (`"Deposit"` for `Deposit { .. }`).
            #[allow(dead_code)]
            pub fn kind(&self) -> &'static str {
                #body
            }

            /// Whether this event's variant is marked `#[internal]`: only handlers may emit
            /// it (return this from `App::is_internal`).
            #[allow(dead_code)]
            pub fn is_internal(&self) -> bool {
                #internal_body
            }
        }
    })
}

/// Whether a variant carries `#[internal]` (a bare attribute: arguments are a mistake).
fn is_internal(variant: &syn::Variant) -> syn::Result<bool> {
    let mut internal = false;
    for attr in &variant.attrs {
        if attr.path().is_ident("internal") {
            if !matches!(attr.meta, syn::Meta::Path(_)) {
                return Err(syn::Error::new_spanned(
                    &attr.meta,
                    "#[internal] takes no arguments: it marks a variant only handlers may emit",
                ));
            }
            internal = true;
        }
    }
    Ok(internal)
}
