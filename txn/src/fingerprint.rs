//! The store fingerprint: what application and on-disk format wrote a store, recorded when the
//! store is first used and compared by `Runtime::start` before recovery touches anything.
//!
//! Where a row lives is a function of the application's shape: a checkpoint row key is
//! `[global partition][table index][key]`, global partitions are numbered service by service in
//! declaration order, a key's partition is `route::partition_of(key, n_partitions)`, and the log
//! holds events of the application's event type. Restarting with 8 partitions instead of 4, or
//! with a table declared before an existing one, would silently replay the log into a different
//! state or misread checkpoint rows. So the store keeps a [`Fingerprint`] of the application
//! that wrote it (in its store info record, [`crate::storage::Storage::write_store_info`]) and a
//! start with a different application is refused with every difference named.
//!
//! Record layout: `[format version: u32 LE][rmp-serde of Fingerprint]`. The version comes first
//! so a store of another format is named as such even if its fingerprint no longer decodes.

use crate::app::{App, AppDef};
use crate::error::TxnError;
use crate::storage::Storage;
pub use crate::table_shape::TableShape;
use serde::{Deserialize, Serialize};

/// The on-disk format this build reads and writes. History:
/// - 1: stores written before the fingerprint existed (no store info record); keys were routed
///   with `rustc_hash::FxHasher`, whose output changed between rustc-hash versions.
/// - 2: the store info record, and keys routed by `actor_runtime::partition_of` (a fixed,
///   platform-independent hash pinned by golden-value tests).
/// - 3: `AbortReason::User` carries the business `kind` (outcomes in the dedup window).
/// - 4: typed service contracts: the log holds the generated envelope (service type name, then
///   event type name), and the fingerprint records both per service.
pub const STORE_FORMAT_VERSION: u32 = 4;

/// What the persisted layout depends on, for one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceShape {
    pub name: String,
    pub n_partitions: u32,
    /// In declaration order: a table's position is part of every row key.
    pub tables: Vec<TableShape>,
    /// For a typed service (`AppBuilder::add_service`): its type's name, which the log spells
    /// as the envelope's variant.
    #[serde(default)]
    pub envelope_variant: Option<String>,
    /// For a typed service: the event types it takes, by name, as the log spells them. A
    /// stored event type the application no longer has would not decode.
    #[serde(default)]
    pub events: Vec<String>,
}

/// The shape of an application as far as its stored data depends on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The Rust type name of `App::Event` (the log holds these).
    pub event_type: String,
    /// The Rust type name of `App::Output` (the dedup window in checkpoints holds these).
    pub output_type: String,
    /// In declaration order: a service's position decides its global partitions.
    pub services: Vec<ServiceShape>,
}

impl Fingerprint {
    /// The fingerprint of `app`.
    pub fn of<A: App>(app: &AppDef<A>) -> Self {
        Fingerprint {
            event_type: std::any::type_name::<A::Event>().to_string(),
            output_type: std::any::type_name::<A::Output>().to_string(),
            services: app
                .services
                .iter()
                .map(|s| ServiceShape {
                    name: s.name.clone(),
                    n_partitions: s.service.n_partitions,
                    tables: s.tables.iter().map(|t| t.shape.clone()).collect(),
                    envelope_variant: s.typed.as_ref().map(|t| t.type_name.to_string()),
                    events: s.typed.as_ref().map_or_else(Vec::new, |t| {
                        t.events.iter().map(|e| e.kind.to_string()).collect()
                    }),
                })
                .collect(),
        }
    }

    /// The store info record: format version, then the fingerprint.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = STORE_FORMAT_VERSION.to_le_bytes().to_vec();
        rmp_serde::encode::write(&mut out, self).expect("a fingerprint always encodes");
        out
    }

    /// Decodes a record made by [`Fingerprint::encode`] (e.g. a cluster peer's identity),
    /// refusing one of another format version.
    pub fn decode(record: &[u8]) -> Result<Fingerprint, FingerprintDecodeError> {
        let Some((version, body)) = record.split_first_chunk::<4>() else {
            return Err(FingerprintDecodeError::TooShort { len: record.len() });
        };
        let version = u32::from_le_bytes(*version);
        if version != STORE_FORMAT_VERSION {
            return Err(FingerprintDecodeError::OtherVersion { version });
        }
        rmp_serde::from_slice(body).map_err(|e| FingerprintDecodeError::Body(e.to_string()))
    }

    /// This fingerprint with every Rust type name (event, output, keys, rows, placement) taken
    /// from `app` where the two have the same service and table; the rest unchanged.
    fn with_type_names_of(&self, app: &Fingerprint) -> Fingerprint {
        let mut renamed = self.clone();
        renamed.event_type.clone_from(&app.event_type);
        renamed.output_type.clone_from(&app.output_type);
        for service in &mut renamed.services {
            let Some(now) = app.services.iter().find(|s| s.name == service.name) else {
                continue;
            };
            for table in &mut service.tables {
                if let Some(new) = now.tables.iter().find(|t| t.name == table.name) {
                    table.key_type.clone_from(&new.key_type);
                    table.row_type.clone_from(&new.row_type);
                    if table.placed_by.is_some() && new.placed_by.is_some() {
                        table.placed_by.clone_from(&new.placed_by);
                    }
                }
            }
        }
        renamed
    }

    /// Every difference between the fingerprint in the store (`self`) and the application's,
    /// in words; empty when they match.
    pub fn differences(&self, app: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        for (what, stored, now) in [
            ("event type", &self.event_type, &app.event_type),
            ("output type", &self.output_type, &app.output_type),
        ] {
            if stored != now {
                out.push(format!(
                    "{what}: `{stored}` in the store, `{now}` in the application"
                ));
            }
        }
        let stored_names: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
        let app_names: Vec<&str> = app.services.iter().map(|s| s.name.as_str()).collect();
        list_differences("service", "", &stored_names, &app_names, &mut out);
        for stored in &self.services {
            if let Some(now) = app.services.iter().find(|s| s.name == stored.name) {
                service_differences(stored, now, &mut out);
            }
        }
        out
    }
}

/// Why an encoded fingerprint could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintDecodeError {
    #[error("{len} bytes are too short to hold a fingerprint's format version")]
    TooShort { len: usize },
    #[error("format version {version}, not this build's {STORE_FORMAT_VERSION}")]
    OtherVersion { version: u32 },
    #[error("the fingerprint does not decode: {0}")]
    Body(String),
}

/// Differences of one service present in both.
fn service_differences(stored: &ServiceShape, now: &ServiceShape, out: &mut Vec<String>) {
    if stored.envelope_variant != now.envelope_variant {
        out.push(format!(
            "service `{}`: its events are logged as `{}` in the store, as `{}` by the \
             application (a renamed service type cannot read the log)",
            stored.name,
            stored.envelope_variant.as_deref().unwrap_or("(untyped)"),
            now.envelope_variant.as_deref().unwrap_or("(untyped)"),
        ));
    }
    // New event types are fine; a stored one the application lost would not decode.
    for kind in stored.events.iter().filter(|k| !now.events.contains(k)) {
        out.push(format!(
            "service `{}`: event type `{kind}` is in the store's log format but not in the \
             application (renamed or removed)",
            stored.name
        ));
    }
    if stored.n_partitions != now.n_partitions {
        out.push(format!(
            "service `{}`: {} partitions in the store, {} in the application",
            stored.name, stored.n_partitions, now.n_partitions
        ));
    }
    let stored_names: Vec<&str> = stored.tables.iter().map(|t| t.name.as_str()).collect();
    let app_names: Vec<&str> = now.tables.iter().map(|t| t.name.as_str()).collect();
    let scope = format!(" in service `{}`", stored.name);
    list_differences("table", &scope, &stored_names, &app_names, out);
    for table in &stored.tables {
        let Some(new) = now.tables.iter().find(|t| t.name == table.name) else {
            continue;
        };
        let fields = [
            ("kind", &table.kind, &new.kind),
            ("key type", &table.key_type, &new.key_type),
            ("row type", &table.row_type, &new.row_type),
        ];
        for (what, was, is) in fields {
            if was != is {
                out.push(format!(
                    "table `{}.{}`: {what} `{was}` in the store, `{is}` in the application",
                    stored.name, table.name
                ));
            }
        }
        let show = |p: &Option<String>| p.clone().unwrap_or_else(|| "the whole key".into());
        if table.placed_by != new.placed_by {
            out.push(format!(
                "table `{}.{}`: placed by {} in the store, by {} in the application",
                stored.name,
                table.name,
                show(&table.placed_by),
                show(&new.placed_by)
            ));
        }
        if table.replicated != new.replicated {
            let word = |r: bool| if r { "replicated" } else { "partitioned" };
            out.push(format!(
                "table `{}.{}`: {} in the store, {} in the application",
                stored.name,
                table.name,
                word(table.replicated),
                word(new.replicated)
            ));
        }
    }
}

/// Names removed, added (saying before which stored name, since positions are part of the
/// layout) and reordered between two declaration-ordered lists.
fn list_differences(what: &str, scope: &str, stored: &[&str], now: &[&str], out: &mut Vec<String>) {
    for name in stored.iter().filter(|n| !now.contains(n)) {
        out.push(format!(
            "{what} `{name}` is in the store but not in the application{scope}"
        ));
    }
    for (idx, name) in now.iter().enumerate() {
        if stored.contains(name) {
            continue;
        }
        match now[idx + 1..].iter().find(|n| stored.contains(n)) {
            Some(next) => out.push(format!("{what} `{name}` added before `{next}`{scope}")),
            None => out.push(format!(
                "{what} `{name}` added after every {what} in the store{scope}"
            )),
        }
    }
    let kept_stored: Vec<&&str> = stored.iter().filter(|n| now.contains(n)).collect();
    let kept_now: Vec<&&str> = now.iter().filter(|n| stored.contains(n)).collect();
    if let Some((was, is)) = kept_stored
        .iter()
        .zip(&kept_now)
        .find(|(was, is)| was != is)
    {
        out.push(format!(
            "{what}s{scope} are declared in another order: `{is}` where the store has `{was}`"
        ));
    }
}

/// Accepts that the store was written by `app` with other Rust type *names* only — a type
/// renamed or moved to another module, or a compiler that prints `std::any::type_name`
/// differently — and records `app`'s fingerprint in the store. Returns the differences it
/// accepted (empty when there were none). Anything else that differs (partition counts,
/// services, tables, kinds, replication) is refused with [`TxnError::StoreMismatch`] and
/// nothing is written.
///
/// Call it only once you know the renamed types encode and hash exactly as before (same
/// fields, same serde representation, same `Hash`): the store cannot check that.
pub fn accept_renamed_types<A: App>(
    app: &AppDef<A>,
    storage: &dyn Storage,
) -> Result<Vec<String>, TxnError> {
    let ours = Fingerprint::of(app);
    let stored = read_stored(storage)?
        .ok_or_else(|| TxnError::StoreFormat("the store has no store info record".into()))?;
    let remaining = stored.with_type_names_of(&ours).differences(&ours);
    if !remaining.is_empty() {
        return Err(TxnError::StoreMismatch(remaining));
    }
    let accepted = stored.differences(&ours);
    if !accepted.is_empty() {
        storage
            .write_store_info(&ours.encode())
            .map_err(|e| TxnError::Storage(format!("writing the store info record: {e}")))?;
    }
    Ok(accepted)
}

/// Compares the store's fingerprint with the application's (`ours`) before anything else reads
/// the store; writes it when the store is new. Refuses another application, another format
/// version, and a non-empty store written before fingerprints existed.
pub(crate) fn check_store(ours: &Fingerprint, storage: &dyn Storage) -> Result<(), TxnError> {
    let Some(stored) = read_stored(storage)? else {
        return adopt_empty_store(storage, ours);
    };
    let differences = stored.differences(ours);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(TxnError::StoreMismatch(differences))
    }
}

/// [`check_store`] without adopting an empty store (nothing is written): a store with no
/// fingerprint yet is refused too.
pub(crate) fn check_written_store(
    ours: &Fingerprint,
    storage: &dyn Storage,
) -> Result<(), TxnError> {
    let Some(stored) = read_stored(storage)? else {
        return Err(TxnError::Recovery(
            "the store holds no application yet".into(),
        ));
    };
    let differences = stored.differences(ours);
    match differences.is_empty() {
        true => Ok(()),
        false => Err(TxnError::StoreMismatch(differences)),
    }
}

/// The fingerprint in the store, `None` when it has no record; refuses another format version.
fn read_stored(storage: &dyn Storage) -> Result<Option<Fingerprint>, TxnError> {
    let read = storage.read_store_info();
    let Some(record) =
        read.map_err(|e| TxnError::Storage(format!("reading the store info record: {e}")))?
    else {
        return Ok(None);
    };
    let Some((version, body)) = record.split_first_chunk::<4>() else {
        return Err(TxnError::StoreFormat(format!(
            "the store info record of the {} store is {} bytes, too short to hold a format \
             version",
            storage.name(),
            record.len()
        )));
    };
    let version = u32::from_le_bytes(*version);
    if version != STORE_FORMAT_VERSION {
        return Err(TxnError::StoreFormat(format!(
            "the {} store has on-disk format version {version}; this build of vmsdb reads and \
             writes version {STORE_FORMAT_VERSION} only. Open it with a build of version \
             {version}, or start on a new, empty store",
            storage.name()
        )));
    }
    let stored: Fingerprint = rmp_serde::from_slice(body).map_err(|e| {
        TxnError::StoreFormat(format!(
            "the fingerprint in the {} store's info record (format version {version}) does not \
             decode: {e}",
            storage.name()
        ))
    })?;
    Ok(Some(stored))
}

/// A store without a record: new and empty gets the application's fingerprint; one holding data
/// was written before fingerprints existed (format 1, keys routed by another hash) and is refused.
fn adopt_empty_store(storage: &dyn Storage, ours: &Fingerprint) -> Result<(), TxnError> {
    let io =
        |what: &str, e: crate::storage::StorageError| TxnError::Storage(format!("{what}: {e}"));
    let last_epoch = storage
        .last_epoch()
        .map_err(|e| io("reading the last logged epoch", e))?;
    let checkpoint = storage
        .latest_checkpoint_epoch()
        .map_err(|e| io("reading the latest checkpoint's epoch", e))?;
    if last_epoch.is_some() || checkpoint.is_some() {
        return Err(TxnError::StoreFormat(format!(
            "the {} store holds data (last logged epoch {last_epoch:?}, latest checkpoint \
             {checkpoint:?}) but no store info record: it was written by a build of vmsdb older \
             than on-disk format version 2 (format 1), which routed keys to partitions with \
             another hash, so this build (format {STORE_FORMAT_VERSION}) would put its rows in \
             the wrong partitions. Start on a new, empty store and load the data again",
            storage.name()
        )));
    }
    storage
        .write_store_info(&ours.encode())
        .map_err(|e| io("writing the store info record", e))
}
