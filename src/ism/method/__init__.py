"""Training objectives: the flow path, shortcut self-consistency, and (later) the iSM components."""
