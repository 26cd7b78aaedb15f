# ruff: noqa: F821 - fizzbuzz comes from the program, which runs first in the same namespace
# Runs after examples/program.py in the same namespace: the program passes when this ends.
assert fizzbuzz(3) == "Fizz"
assert fizzbuzz(10) == "Buzz"
assert fizzbuzz(30) == "FizzBuzz"
assert [fizzbuzz(i) for i in (1, 2, 4)] == ["1", "2", "4"]
print("all fizzbuzz tests passed")
