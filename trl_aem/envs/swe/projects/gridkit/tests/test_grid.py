import unittest

from gridkit import Grid, manhattan

MAZE = """
S..#
.#.#
.#..
...G
"""


class TestBasics(unittest.TestCase):
    def test_parse_and_render(self):
        grid = Grid.parse(MAZE)
        self.assertEqual((grid.height, grid.width), (4, 4))
        self.assertEqual(grid.render(), MAZE.strip())

    def test_ragged_rows(self):
        with self.assertRaises(ValueError):
            Grid(["ab", "c"])
        with self.assertRaises(ValueError):
            Grid([])

    def test_bounds(self):
        grid = Grid(["abc", "def"])
        self.assertTrue(grid.in_bounds(1, 2))
        self.assertFalse(grid.in_bounds(2, 0))
        self.assertFalse(grid.in_bounds(0, -1))
        self.assertEqual(grid.get(1, 0), "d")
        with self.assertRaises(IndexError):
            grid.get(0, 3)

    def test_count(self):
        self.assertEqual(Grid.parse(MAZE).count("#"), 4)

    def test_manhattan(self):
        self.assertEqual(manhattan((0, 0), (3, -4)), 7)


class TestNeighbours(unittest.TestCase):
    def test_corner(self):
        self.assertEqual(Grid(["ab", "cd"]).neighbours(0, 0), [(0, 1), (1, 0)])

    def test_centre(self):
        self.assertEqual(Grid(["abc", "def", "ghi"]).neighbours(1, 1), [(0, 1), (1, 0), (1, 2), (2, 1)])

    def test_diagonal(self):
        self.assertEqual(len(Grid(["abc", "def", "ghi"]).neighbours(1, 1, diagonal=True)), 8)
        self.assertEqual(Grid(["ab", "cd"]).neighbours(1, 1, diagonal=True), [(0, 0), (0, 1), (1, 0)])


class TestTransforms(unittest.TestCase):
    def test_transpose(self):
        self.assertEqual(Grid(["abc", "def"]).transpose().render(), "ad\nbe\ncf")

    def test_rotate(self):
        self.assertEqual(Grid(["abc", "def"]).rotate().render(), "da\neb\nfc")

    def test_four_rotations(self):
        grid = Grid.parse(MAZE)
        self.assertEqual(grid.rotate().rotate().rotate().rotate().render(), grid.render())


class TestFill(unittest.TestCase):
    def test_flood_fill(self):
        grid = Grid(["..#", ".##", "#.."])
        self.assertEqual(grid.flood_fill(0, 0, "o"), 3)
        self.assertEqual(grid.render(), "oo#\no##\n#..")

    def test_flood_fill_same_char(self):
        self.assertEqual(Grid(["aa"]).flood_fill(0, 0, "a"), 0)

    def test_regions(self):
        grid = Grid(["x.x", "..x", "x.."])
        self.assertEqual(grid.regions("x"), 3)
        self.assertEqual(grid.regions("."), 1)


class TestPaths(unittest.TestCase):
    def test_shortest(self):
        self.assertEqual(Grid.parse(MAZE).shortest_path((0, 0), (3, 3)), 6)

    def test_same_cell(self):
        self.assertEqual(Grid.parse(MAZE).shortest_path((0, 0), (0, 0)), 0)

    def test_blocked(self):
        grid = Grid(["a#b", "##.", "..."])
        self.assertEqual(grid.shortest_path((0, 0), (2, 2)), -1)
        self.assertEqual(grid.shortest_path((0, 1), (2, 2)), -1)


if __name__ == "__main__":
    unittest.main()
