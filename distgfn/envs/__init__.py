"""Built-in environments; they are found by name through `distgfn.tasks.ENVS`."""
