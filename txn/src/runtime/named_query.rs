//! Named queries from the client's side (`Client::query_named`, `query_named_at`,
//! `query_by_name`): the call is checked against the application's registered queries, its
//! arguments encoded once, and it is sequenced like a closure query; the per-partition parts come
//! back encoded (from this node's partitions and every other's alike) and are decoded here, in the
//! caller's order, for the caller to merge.

use super::client::Client;
use crate::app::{App, ServiceRef};
use crate::error::TxnError;
use crate::query::{NamedCall, NamedPart, NamedQuery};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

impl<A: App> Client<A> {
    /// Runs the named query `query` (`AppBuilder::query`) with `args` on every partition of
    /// `services`, at one consistent snapshot, and returns each partition's part in service,
    /// then partition order. Unlike [`Client::query`] it also reaches partitions other nodes
    /// hold. Fold the parts to merge them.
    pub async fn query_named<Args: Serialize, Part: DeserializeOwned>(
        &self,
        query: &NamedQuery<Args, Part>,
        services: &[ServiceRef],
        args: &Args,
    ) -> Result<Vec<Part>, TxnError> {
        let partitions: Vec<(ServiceRef, u32)> = services
            .iter()
            .flat_map(|s| (0..s.n_partitions).map(move |p| (*s, p)))
            .collect();
        self.query_named_at(query, &partitions, args).await
    }

    /// Like [`Client::query_named`], only on the listed `(service, partition)` pairs (e.g. the
    /// partitions owning the keys a lookup needs); parts come in the order of `partitions`.
    pub async fn query_named_at<Args: Serialize, Part: DeserializeOwned>(
        &self,
        query: &NamedQuery<Args, Part>,
        partitions: &[(ServiceRef, u32)],
        args: &Args,
    ) -> Result<Vec<Part>, TxnError> {
        let args = rmp_serde::to_vec(args).map_err(|e| TxnError::QueryFailed {
            query: query.name().to_string(),
            at: "the client".to_string(),
            message: format!("its arguments do not encode: {e}"),
        })?;
        let parts = self.query_by_name(query.name(), partitions, args).await?;
        let mut decoded = Vec::with_capacity(parts.len());
        for (bytes, (service, partition)) in parts.iter().zip(partitions) {
            let part = rmp_serde::from_slice(bytes).map_err(|e| TxnError::QueryFailed {
                query: query.name().to_string(),
                at: format!("{} partition {partition}", self.app.service_name(*service)),
                message: format!("its part does not decode: {e}"),
            })?;
            decoded.push(part);
        }
        Ok(decoded)
    }

    /// Runs the query registered as `name` with encoded (rmp-serde) `args` on the listed
    /// `(service, partition)` pairs at one consistent snapshot, and returns each partition's
    /// encoded part in the order of `partitions` (for servers, which name queries by string).
    /// An unknown name is refused before anything runs (`TxnError::UnknownQuery`); a partition
    /// whose arguments or part did not decode fails the call (`TxnError::QueryFailed`).
    pub async fn query_by_name(
        &self,
        name: &str,
        partitions: &[(ServiceRef, u32)],
        args: Vec<u8>,
    ) -> Result<Vec<Vec<u8>>, TxnError> {
        let call = Arc::new(NamedCall {
            name: name.to_string(),
            args,
        });
        let Some(f) = self.app.queries.query_fn(call) else {
            return Err(TxnError::UnknownQuery {
                name: name.to_string(),
                known: self.app.queries.names().map(str::to_string).collect(),
            });
        };
        let parts = self.query_parts_at(partitions, f).await?;
        let mut out = Vec::with_capacity(parts.len());
        for (gp, part) in parts {
            let part = *part
                .downcast::<NamedPart>()
                .expect("a named query's part is a NamedPart");
            out.push(part.map_err(|message| {
                let (service_idx, partition) = self.app.locate(gp);
                let service = &self.app.services[service_idx as usize].name;
                TxnError::QueryFailed {
                    query: name.to_string(),
                    at: format!("{service} partition {partition}"),
                    message,
                }
            })?);
        }
        Ok(out)
    }
}
