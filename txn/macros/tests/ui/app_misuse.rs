//! #[app] on a struct with fields, on a generic struct, on an enum, without services, with
//! an unknown argument and with a service named twice.

use txn::app;

pub struct Accounts;

#[app(services(Accounts))]
pub struct WithFields {
    name: String,
}

#[app(services(Accounts))]
pub struct Generic<T>;

#[app(services(Accounts))]
pub enum NotAStruct {
    A,
}

#[app(output = i64)]
pub struct NoServices;

#[app(services(Accounts, Accounts), outputs = i64)]
pub struct Twice;

fn main() {}
