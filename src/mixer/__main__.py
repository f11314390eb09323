from mixer.cli import main

main()
