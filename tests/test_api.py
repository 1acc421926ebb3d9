import suricate


def test_public_names_are_pinned() -> None:
    assert sorted(suricate.__all__) == sorted(
        [
            "AbandonReason", "Abandoned", "Accepted", "ActorStopped", "Backoff", "Completed",
            "DeadLetter", "Deduplicated", "DestroyReport", "DrainExit", "DrainMode", "Durability", "Event", "ExecutorExit", "Fatal",
            "GiveUp", "Handling", "IllegalTransition", "Input", "InputNotFound", "InputRecord",
            "InputRejected", "InputState", "MemoryStore", "NotReady", "Outcome", "Overloaded",
            "PeerMessage", "Receipt", "RecoveryCorruption", "RecoveryReport", "RecycleReport",
            "ResetReport", "Restart", "RestartPolicy", "RetireReport", "Runtime",
            "RuntimeClosed", "RuntimeCrashed", "RuntimeStats", "Session", "SessionDestroyed",
            "SessionNotFound", "SessionState", "SessionStats", "SourceDrain", "StopReport", "Store",
            "StoreError", "StoreLocked", "Strategy", "Superseded", "SuricateError",
            "TerminalError", "ThreadExecutor", "Turn", "TurnResult", "WaitTimeout", "open_runtime",
        ]
    )
    for name in suricate.__all__:
        assert hasattr(suricate, name), name


def test_errors_form_one_hierarchy_with_fitting_builtins() -> None:
    for name in (
        "InputRejected", "NotReady", "SessionDestroyed", "SessionNotFound", "InputNotFound",
        "Overloaded", "WaitTimeout", "StoreError", "StoreLocked", "RecoveryCorruption",
        "RuntimeClosed", "RuntimeCrashed", "ActorStopped", "IllegalTransition",
        "TerminalError",
    ):
        assert issubclass(getattr(suricate, name), suricate.SuricateError), name
        assert getattr(suricate, name).__doc__, name
    assert issubclass(suricate.SessionNotFound, LookupError)
    assert issubclass(suricate.InputNotFound, LookupError)
    assert issubclass(suricate.InputRejected, ValueError)
    assert issubclass(suricate.WaitTimeout, TimeoutError)
    assert issubclass(suricate.StoreLocked, suricate.StoreError)
    assert suricate.NotReady(suricate.SessionState.RETIRED).state is suricate.SessionState.RETIRED
