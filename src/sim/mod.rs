//! The offline fairness simulator.
