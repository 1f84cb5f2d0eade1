//! The migration lifecycle as a pure state machine: states in the order a migration visits them
//! (Spirit's names), events, and a total transition function.
//!
//! # Invariants
//! - Ordinal comparisons mean "at or past": `state >= State::CutOver` stops checkpoints and the
//!   periodic status line, on success and failure alike (`ErrCleanup` is last).
//! - Every (state, event) pair has an answer: the next state, or a typed refusal that changes
//!   nothing.
//! - Nothing leaves `CutOver` for `ErrCleanup` once the rename ran: the rename's success is the
//!   `CutOverDone` event, and `Close` refuses `Fail` (after a rename the tables belong to the
//!   application; cleanup must never touch them).
//!
//! # Design decisions
//! The outcome (running, completed, failed, cancelled) and the paused flag are not states: a
//! paused copy is still `CopyRows`. The sentinel wait sits directly before `CutOver`, as in
//! Spirit's code and its sentinel change (its README lists it after `CopyRows`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Lifecycle states, declared in visiting order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum State {
    /// Preflight, shadow table, change stream, first checkpoint.
    Initial,
    /// Chunks copied by workers while changes are captured.
    CopyRows,
    /// Catching up on the changes captured during the copy.
    ApplyChangeset,
    /// Adding back secondary indexes deferred during the copy.
    RestoreSecondaryIndexes,
    /// `ANALYZE TABLE` on the shadow table.
    AnalyzeTable,
    /// Proving the shadow table equals the source.
    Checksum,
    /// After a clean checksum, before the cut-over decision.
    PostChecksum,
    /// Waiting for the sentinel table to be dropped or the migration released.
    WaitingOnSentinelTable,
    /// Swapping the tables.
    CutOver,
    /// Removing shoal's tables after the swap.
    Close,
    /// Undoing after a failure before the swap.
    ErrCleanup,
}

impl State {
    /// Every state, in order.
    pub const ALL: [State; 11] = [
        State::Initial,
        State::CopyRows,
        State::ApplyChangeset,
        State::RestoreSecondaryIndexes,
        State::AnalyzeTable,
        State::Checksum,
        State::PostChecksum,
        State::WaitingOnSentinelTable,
        State::CutOver,
        State::Close,
        State::ErrCleanup,
    ];

    /// The state's name in snake case (`copy_rows`), for span names and metric labels.
    pub fn snake_name(self) -> String {
        let mut name = String::new();
        for (index, letter) in format!("{self:?}").chars().enumerate() {
            if letter.is_ascii_uppercase() {
                if index > 0 {
                    name.push('_');
                }
                name.push(letter.to_ascii_lowercase());
            } else {
                name.push(letter);
            }
        }
        name
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What can happen to a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// `Initial` finished: the copy starts.
    CopyStarted,
    /// Every chunk is drained.
    CopyDone,
    /// The change stream caught up after the copy.
    ChangesetApplied,
    /// Deferred secondary indexes are back.
    IndexesRestored,
    /// The shadow table was analysed.
    Analyzed,
    /// A full checksum pass found no difference.
    ChecksumPassed,
    /// Cut-over is deferred: wait on the sentinel.
    AwaitSentinel,
    /// Proceed to the cut-over (from `PostChecksum`), or the sentinel released the migration.
    BeginCutOver,
    /// The rename ran and the catalogue shows the new table in place.
    CutOverDone,
    /// A failure (or a cancel) before the rename.
    Fail,
    /// A new owner resumes from a checkpoint, re-entering the saved state (from `Initial`).
    ResumeAt(State),
}

/// Why a transition is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The event does not apply in this state.
    #[error("event {event:?} is not valid in state {from}")]
    NotFromThisState {
        /// The current state.
        from: State,
        /// The refused event.
        event: Event,
    },
    /// The migration already ended (`Close` or `ErrCleanup`).
    #[error("the migration already ended in {from}; event {event:?} refused")]
    AlreadyEnded {
        /// The final state.
        from: State,
        /// The refused event.
        event: Event,
    },
    /// A failure after the rename cannot clean up: the new table is live.
    #[error("the tables were already swapped; a failure in {from} must not clean up")]
    AfterRename {
        /// The current state.
        from: State,
    },
    /// A resume may only re-enter a state a checkpoint can describe.
    #[error("cannot resume at {target} (from {from})")]
    InvalidResumeTarget {
        /// The current state.
        from: State,
        /// The requested state.
        target: State,
    },
}

/// The next state after `event` in `from`, or why not. Pure and total.
pub fn transition(from: State, event: Event) -> Result<State, TransitionError> {
    use State::*;
    if matches!(from, ErrCleanup) || (matches!(from, Close) && event != Event::Fail) {
        return Err(TransitionError::AlreadyEnded { from, event });
    }
    let next = match (from, event) {
        (Close, Event::Fail) => return Err(TransitionError::AfterRename { from }),
        (Initial, Event::ResumeAt(target)) => {
            return if (CopyRows..=Close).contains(&target) {
                Ok(target)
            } else {
                Err(TransitionError::InvalidResumeTarget { from, target })
            };
        }
        (_, Event::Fail) => ErrCleanup,
        (Initial, Event::CopyStarted) => CopyRows,
        (CopyRows, Event::CopyDone) => ApplyChangeset,
        (ApplyChangeset, Event::ChangesetApplied) => RestoreSecondaryIndexes,
        (RestoreSecondaryIndexes, Event::IndexesRestored) => AnalyzeTable,
        (AnalyzeTable, Event::Analyzed) => Checksum,
        (Checksum, Event::ChecksumPassed) => PostChecksum,
        (PostChecksum, Event::AwaitSentinel) => WaitingOnSentinelTable,
        (PostChecksum | WaitingOnSentinelTable, Event::BeginCutOver) => CutOver,
        (CutOver, Event::CutOverDone) => Close,
        _ => return Err(TransitionError::NotFromThisState { from, event }),
    };
    Ok(next)
}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// State left.
    pub from: State,
    /// State entered.
    pub to: State,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Why, for operators.
    pub message: String,
}

/// How many transitions a status keeps.
pub const HISTORY: usize = 20;

/// The last [`HISTORY`] transitions, oldest first, and when the current state was entered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    transitions: std::collections::VecDeque<Transition>,
}

impl History {
    /// Records a transition, dropping the oldest beyond [`HISTORY`].
    pub fn record(&mut self, transition: Transition) {
        if self.transitions.len() == HISTORY {
            self.transitions.pop_front();
        }
        self.transitions.push_back(transition);
    }

    /// The kept transitions, oldest first.
    pub fn transitions(&self) -> impl Iterator<Item = &Transition> {
        self.transitions.iter()
    }

    /// When the current state was entered (the last transition), if any.
    pub fn state_entered_ms(&self) -> Option<u64> {
        self.transitions.back().map(|transition| transition.at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    #[test]
    fn history_keeps_the_last_twenty_in_order() {
        let mut history = History::default();
        assert_eq!(history.state_entered_ms(), None);
        for at_ms in 0..25 {
            history.record(Transition {
                from: CopyRows,
                to: CopyRows,
                at_ms,
                message: format!("step {at_ms}"),
            });
        }
        let kept: Vec<u64> = history
            .transitions()
            .map(|transition| transition.at_ms)
            .collect();
        assert_eq!(kept, (5..25).collect::<Vec<_>>());
        assert_eq!(history.state_entered_ms(), Some(24));
    }

    fn events() -> Vec<Event> {
        let mut events = vec![
            Event::CopyStarted,
            Event::CopyDone,
            Event::ChangesetApplied,
            Event::IndexesRestored,
            Event::Analyzed,
            Event::ChecksumPassed,
            Event::AwaitSentinel,
            Event::BeginCutOver,
            Event::CutOverDone,
            Event::Fail,
        ];
        events.extend(State::ALL.iter().map(|state| Event::ResumeAt(*state)));
        events
    }

    /// The whole table, written out independently of `transition`.
    fn expected(from: State, event: Event) -> Option<State> {
        let forward = [
            (Initial, Event::CopyStarted, CopyRows),
            (CopyRows, Event::CopyDone, ApplyChangeset),
            (
                ApplyChangeset,
                Event::ChangesetApplied,
                RestoreSecondaryIndexes,
            ),
            (
                RestoreSecondaryIndexes,
                Event::IndexesRestored,
                AnalyzeTable,
            ),
            (AnalyzeTable, Event::Analyzed, Checksum),
            (Checksum, Event::ChecksumPassed, PostChecksum),
            (PostChecksum, Event::AwaitSentinel, WaitingOnSentinelTable),
            (PostChecksum, Event::BeginCutOver, CutOver),
            (WaitingOnSentinelTable, Event::BeginCutOver, CutOver),
            (CutOver, Event::CutOverDone, Close),
        ];
        if let Some((_, _, to)) = forward.iter().find(|(f, e, _)| *f == from && *e == event) {
            return Some(*to);
        }
        let before_rename = [
            Initial,
            CopyRows,
            ApplyChangeset,
            RestoreSecondaryIndexes,
            AnalyzeTable,
            Checksum,
            PostChecksum,
            WaitingOnSentinelTable,
            CutOver,
        ];
        if event == Event::Fail && before_rename.contains(&from) {
            return Some(ErrCleanup);
        }
        match (from, event) {
            (Initial, Event::ResumeAt(target)) if target != Initial && target != ErrCleanup => {
                Some(target)
            }
            _ => None,
        }
    }

    #[test]
    fn the_whole_table() {
        let mut accepted = 0;
        for from in State::ALL {
            for event in events() {
                let got = transition(from, event);
                match expected(from, event) {
                    Some(to) => {
                        assert_eq!(got, Ok(to), "{from} + {event:?}");
                        accepted += 1;
                    }
                    None => assert!(
                        got.is_err(),
                        "{from} + {event:?} must be refused, got {got:?}"
                    ),
                }
            }
        }
        // 10 forward steps, 9 failures before the rename, 9 resume targets.
        assert_eq!(accepted, 28);
    }

    #[test]
    fn refusals_are_typed() {
        assert_eq!(
            transition(CopyRows, Event::ChecksumPassed),
            Err(TransitionError::NotFromThisState {
                from: CopyRows,
                event: Event::ChecksumPassed
            })
        );
        assert_eq!(
            transition(Close, Event::Fail),
            Err(TransitionError::AfterRename { from: Close })
        );
        assert_eq!(
            transition(ErrCleanup, Event::Fail),
            Err(TransitionError::AlreadyEnded {
                from: ErrCleanup,
                event: Event::Fail
            })
        );
        assert_eq!(
            transition(Close, Event::CopyStarted),
            Err(TransitionError::AlreadyEnded {
                from: Close,
                event: Event::CopyStarted
            })
        );
        assert_eq!(
            transition(Initial, Event::ResumeAt(ErrCleanup)),
            Err(TransitionError::InvalidResumeTarget {
                from: Initial,
                target: ErrCleanup
            })
        );
        assert_eq!(
            transition(CopyRows, Event::ResumeAt(Checksum)),
            Err(TransitionError::NotFromThisState {
                from: CopyRows,
                event: Event::ResumeAt(Checksum)
            })
        );
    }

    #[test]
    fn order_means_at_or_past() {
        assert!(State::ALL.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn snake_names() {
        assert_eq!(CopyRows.snake_name(), "copy_rows");
        assert_eq!(
            WaitingOnSentinelTable.snake_name(),
            "waiting_on_sentinel_table"
        );
        assert_eq!(Close.snake_name(), "close");
        assert!(
            WaitingOnSentinelTable < CutOver,
            "the sentinel wait is directly before cut-over"
        );
        assert!(ErrCleanup > Close, "ErrCleanup is last");
    }
}
