"""SWEEnv and its parts: the sandbox, offline and real tasks, the local and Docker back ends."""
