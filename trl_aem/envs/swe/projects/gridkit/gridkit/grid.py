"""A rectangular grid of single characters with neighbourhoods, transforms, fills and paths."""

from collections import deque


def manhattan(a, b):
    return abs(a[0] - b[0]) + abs(a[1] - b[1])


class Grid:
    def __init__(self, rows):
        if not rows:
            raise ValueError("a grid needs at least one row")
        width = len(rows[0])
        if any(len(row) != width for row in rows):
            raise ValueError("rows must have the same length")
        self.cells = [list(row) for row in rows]
        self.height = len(rows)
        self.width = width

    @classmethod
    def parse(cls, text):
        return cls([line for line in text.strip().splitlines() if line])

    def render(self):
        return "\n".join("".join(row) for row in self.cells)

    def in_bounds(self, r, c):
        return 0 <= r < self.height and 0 <= c < self.width

    def get(self, r, c):
        if not self.in_bounds(r, c):
            raise IndexError((r, c))
        return self.cells[r][c]

    def neighbours(self, r, c, diagonal=False):
        """In-bound neighbour positions, in reading order."""
        out = []
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                if dr == 0 and dc == 0:
                    continue
                if not diagonal and dr != 0 and dc != 0:
                    continue
                if self.in_bounds(r + dr, c + dc):
                    out.append((r + dr, c + dc))
        return out

    def transpose(self):
        return Grid(["".join(self.cells[r][c] for r in range(self.height)) for c in range(self.width)])

    def rotate(self):
        """Rotated 90 degrees clockwise."""
        return Grid(["".join(self.cells[r][c] for r in range(self.height - 1, -1, -1)) for c in range(self.width)])

    def count(self, char):
        return sum(row.count(char) for row in self.cells)

    def flood_fill(self, r, c, char):
        """Replace the 4-connected region of the character at (r, c) by ``char``; returns cells changed."""
        target = self.get(r, c)
        if target == char:
            return 0
        changed = 0
        stack = [(r, c)]
        while stack:
            pr, pc = stack.pop()
            if self.cells[pr][pc] != target:
                continue
            self.cells[pr][pc] = char
            changed += 1
            stack.extend(self.neighbours(pr, pc))
        return changed

    def regions(self, char):
        """Number of 4-connected regions made of ``char``."""
        seen = set()
        total = 0
        for r in range(self.height):
            for c in range(self.width):
                if self.cells[r][c] != char or (r, c) in seen:
                    continue
                total += 1
                queue = deque([(r, c)])
                seen.add((r, c))
                while queue:
                    cr, cc = queue.popleft()
                    for nr, nc in self.neighbours(cr, cc):
                        if self.cells[nr][nc] == char and (nr, nc) not in seen:
                            seen.add((nr, nc))
                            queue.append((nr, nc))
        return total

    def shortest_path(self, start, goal, wall="#"):
        """Length of the shortest 4-connected path avoiding ``wall`` cells, or -1 when there is none."""
        if self.get(*start) == wall or self.get(*goal) == wall:
            return -1
        distance = {start: 0}
        queue = deque([start])
        while queue:
            here = queue.popleft()
            if here == goal:
                return distance[here]
            for there in self.neighbours(*here):
                if there not in distance and self.get(*there) != wall:
                    distance[there] = distance[here] + 1
                    queue.append(there)
        return -1
