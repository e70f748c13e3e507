//! `dray-sdk`: the guest side of Dray's plugin contract, for authors of promotion steps.
//!
//! Not written yet: the WIT contract (`wit/`), the `wit_bindgen::generate!` bindings and the
//! `Step` trait arrive with the step-runtime issue. This crate is empty on purpose so that the
//! workspace layout of `DESIGN.md` is in place; it exports nothing and claims nothing.
