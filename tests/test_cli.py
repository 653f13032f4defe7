from watchd.cli import build_parser


def test_every_contract_command_is_in_help() -> None:
    help_text = build_parser().format_help()
    for cmd in ("run", "check", "status", "retry", "forget", "emulator", "demo"):
        assert cmd in help_text
