//! The executors: what runs for a while, calls plugins, and writes its progress to the store
//! after every step or measurement, so a restarted daemon resumes where it stood.
//!
//! - [`promotion`] runs one Promotion's steps;
//! - [`verification`] takes one AnalysisRun's measurements.

pub mod promotion;
pub mod verification;
