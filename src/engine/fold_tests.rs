//! Unit tests of `RunState::apply` (every legal and illegal transition) and `decide`.
