from grokking.cli import main

main(prog_name="grokking")
