import sys
print("module main", __name__, sys.argv[1:])
