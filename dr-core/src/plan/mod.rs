//! Recovery plans: ordered, resumable, timed steps with rollback.
//!
//! This module holds the [`Action`] interface that system crates implement
//! and the [`ActionRegistry`] that maps action names to them.

mod action;

pub use action::{parse_params, Action, ActionContext, ActionFactory, ActionOutput, ActionRegistry};
