//! The rules of time, pure: no I/O, no clock reads, no randomness. Every
//! function takes `now` as an argument, so every rule is tested here
//! exhaustively without a server.
//!
//! - [`session`]: the stored model (values as of the last cycle boundary).
//! - [`create`]: parsing a create request into a valid [`NewSession`].
//! - [`transition`]: commands, timeouts, and [`decide`], the one transition function.
//! - [`time_control`]: delay, byo-yomi, Canadian, hourglass, stages, soft close.
//! - [`timing`]: deadlines and live remaining time; the wire view.
//! - [`events`]: the audit events transitions produce.

pub mod create;
pub mod events;
pub mod ids;
pub mod session;
pub mod time_control;
pub mod timing;
pub mod transition;

pub use create::{FieldError, NewSession};
pub use events::{Event, EventKind};
pub use ids::{GroupId, ParticipantId, SessionId, Timestamp};
pub use session::{ActionOnTimeout, Participant, Session, Status, SyncMode, TimeoutKind};
pub use time_control::{Overtime, Stage, TimeControl};
pub use timing::{SessionView, SwitchView, deadline, switch_view, view};
pub use transition::{Command, Decision, DomainError, Transition, decide};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod time_control_tests;
