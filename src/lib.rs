//! kiln: a self-hosted build-task engine that runs Azure Container Registry task files.
//!
//! This crate is the binary and its CLI ([`cli`], after `az acr`), the HTTP client
//! ([`client`]) and context packing ([`pack`]). `kiln serve` ([`cli`]) runs the control plane
//! (`kiln-server`) and starts the embedded agent (`kiln-agent`, the one crate that calls the
//! worker) on the server's in-process link; nothing here speaks to Docker itself.

pub mod cli;
pub mod client;
pub mod pack;
