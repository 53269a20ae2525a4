"""Use cases, each against ports (typing.Protocol) that infra/ implements."""
