//! The engine: Promotions run step by step.

pub mod expr;
