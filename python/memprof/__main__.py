from memprof import main

main()
